"""`unlearn bench --grid`: a method's grid replaced from the command line, validated like the
params file's own grids, refused in one line otherwise; and how results.md flags a choice at a
grid's end."""

import pytest

from benchmarks.cli import BenchError, with_grids, with_precision
from components.settings import Settings


def test_a_grid_from_the_command_line_replaces_only_that_methods_grid():
    s = Settings()
    got = with_grids(s, ["rl=0.0065,0.013,0.026,0.052,0.104", "scrub=1e-4,2e-4,4e-4,8e-4,1.6e-3"])
    assert got.bench.grids["rl"] == (0.0065, 0.013, 0.026, 0.052, 0.104)
    assert got.bench.grids["scrub"] == (1e-4, 2e-4, 4e-4, 8e-4, 1.6e-3)
    assert got.bench.grids["ft"] == s.bench.grids["ft"] and got.rfa == s.rfa
    assert with_grids(s, []) == s


@pytest.mark.parametrize(
    ("pair", "needle"),
    [
        ("rl=0.1,0.2", "at least 5"),
        ("rl=0.1,0.2,0.4,0.8,1.7", "log-spaced"),
        ("nope=1,2,4,8,16", "for one of ft, neggrad, rfa, rl, salun, scrub"),
        ("rl", "expected method=lr,lr"),
        ("rl=a,b,c,d,e", "expected method=lr,lr"),
    ],
)
def test_a_bad_grid_is_one_line_before_any_work(pair, needle):
    with pytest.raises(BenchError, match=needle) as err:
        with_grids(Settings(), [pair])
    assert "\n" not in str(err.value)


def test_precision_from_the_command_line_sets_every_methods_precision_only():
    s = Settings()
    got = with_precision(s, "bf16")
    assert got.rfa.precision == "bf16" and s.rfa.precision == "auto"  # the baselines read it
    assert got.rfa.model_copy(update={"precision": "auto"}) == s.rfa and got.bench == s.bench
    assert with_precision(s, None) == s  # the params file's
    with pytest.raises(BenchError, match=r"^--precision 'fp16': expected one of auto, fp32, bf16$"):
        with_precision(s, "fp16")


def test_a_choice_at_a_grid_end_says_whether_it_ties_with_other_points():
    from benchmarks.report_tuning import edge_choices

    grid = [0.001, 0.002, 0.004, 0.008, 0.016]
    tuning = {
        "ft": {"grid": grid, "gaps": [5.0, 5.0, 5.0, 7.0, None], "lr": 0.001, "edge": "lowest"},
        "rl": {"grid": grid, "gaps": [9.0, 8.0, 4.0, 2.0, 1.0], "lr": 0.016, "edge": "highest"},
        "scrub": {"grid": grid, "gaps": [3.0, 1.0, 2.0, 4.0, 5.0], "lr": 0.002, "edge": None},
    }
    got = edge_choices({"config": {"tuning": {"methods": tuning}}, "records": []})
    assert got == ["ft: lowest (0.001), tied with 2 other points", "rl: highest (0.016)"]


def test_a_table_written_again_keeps_its_notes_section(tmp_path):
    """`unlearn bench` over a finished table (a resumed run, more seeds) re-renders results.md:
    the Notes section written under it (bench-report --notes) stays as written."""
    import json

    from benchmarks.report import save_results
    from tests.conftest import ROOT

    table = json.loads((ROOT / "benchmarks/results/digits-class0/results.json").read_text())
    out = tmp_path / "table"
    save_results(out, table)
    md = out / "results.md"
    assert "## Notes" not in md.read_text()  # none written, none invented
    md.write_text(md.read_text() + "\n## Notes\n\nTried forget_weight 2.\n")
    save_results(out, table)
    text = md.read_text()
    assert text.endswith("## Notes\n\nTried forget_weight 2.\n") and text.count("## Notes") == 1
