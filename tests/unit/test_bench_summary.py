"""benchmarks/README.md's headline (`unlearn bench-summary`): the committed page equals the
committed tables rendered, a target reads met or MISSED by what the table holds, and a page
without markers or a missing table is one line."""

import copy
import json
import re
import shutil
from pathlib import Path

import pytest

from benchmarks.report import avg_gap, ci95, mean_of, summarise
from benchmarks.summary import TABLES, SummaryError, checks, load, render, with_summary
from pipelines.cli import main

ROOT = Path(__file__).resolve().parents[2]
RESULTS = ROOT / "benchmarks" / "results"
README = ROOT / "benchmarks" / "README.md"


def _verdicts(result: dict) -> dict[str, bool | None]:
    return {target: ok for target, ok, _ in checks(result)}


def _cifar_sample() -> dict:
    return json.loads((RESULTS / "cifar10-resnet20-sample10-merged" / "results.json").read_text())


def _cli(page: Path, *extra: str) -> int:
    return main(["bench-summary", "--readme", str(page), "--results", str(RESULTS), *extra])


def test_the_committed_headline_is_the_committed_tables_rendered():
    readme = README.read_text()
    assert with_summary(readme, render(load(RESULTS))) == readme
    assert _cli(README, "--check") == 0


def test_a_hand_edited_number_is_caught_and_rewritten_from_the_tables(tmp_path, capsys):
    page, readme = tmp_path / "README.md", README.read_text()
    cell = re.search(r"\| (met|\*\*MISSED\*\*): ([0-9.]+)", readme)  # the matrix's first verdict
    verdict, number = cell.groups()
    edited = f"| {'met' if verdict != 'met' else '**MISSED**'}: {float(number) + 0.5:.2f}"
    page.write_text(readme.replace(cell.group(0), edited, 1))
    assert _cli(page, "--check") == 1
    assert "differs from the tables" in capsys.readouterr().out
    assert edited in page.read_text()  # --check writes nothing
    assert _cli(page) == 0
    assert page.read_text() == README.read_text()


def test_rfa_matching_retrain_meets_the_gap_targets_and_untouched_it_does_not():
    result = _cifar_sample()
    oracle = {r["seed"]: r for r in result["records"] if r["method"] == "retrain"}
    original = {r["seed"]: r for r in result["records"] if r["method"] == "original"}
    for metric_source, expect in ((oracle, True), (original, False)):
        moved = copy.deepcopy(result)
        for r in moved["records"]:
            if r["method"] == "rfa":
                src = metric_source[r["seed"]]
                r.update({k: src[k] for k in ("acc_df", "acc_dr", "acc_dt", "mia_efficacy")})
        got = _verdicts(moved)
        assert got["gap ≤ 1.5"] is expect
        assert got["the smallest gap of the seven"] is expect
        assert got["below the untouched original's gap"] is expect


def test_a_baseline_that_loses_dr_is_named_and_one_that_keeps_it_is_not():
    result = _cifar_sample()
    dr0 = next(r["acc_dr"] for r in result["records"] if r["method"] == "original")
    for r in result["records"]:
        if r["method"] in ("ft", "neggrad", "rl", "salun", "scrub"):
            r["acc_dr"] = dr0 - (4.0 if r["method"] == "rl" else 1.0)
    target, ok, measured = next(c for c in checks(result) if c[0].startswith("baselines'"))
    assert ok is False and measured.startswith("rl -4.")
    assert "salun" not in measured and "ft" not in measured


def test_a_class_probe_far_from_retrains_misses_and_near_it_meets():
    result = json.loads((RESULTS / "cifar10-resnet20-class0-merged" / "results.json").read_text())
    probe = "every probe within 5 pt of Retrain's"
    oracle = {r["seed"]: r for r in result["records"] if r["method"] == "retrain"}
    for off, expect in ((4.9, True), (5.2, False), (-5.2, False)):
        for r in result["records"]:
            if r["method"] == "rfa":
                for key in ("probe_acc_dft", "knn_acc_dft", "mlp_acc_dft", "early_probe_acc_dft"):
                    r[key] = oracle[r["seed"]][key] + (off if key == "mlp_acc_dft" else 0.0)
        assert _verdicts(result)[probe] is expect, off


def test_a_time_missed_on_one_quiet_seed_is_missed_and_a_loaded_one_not_judged():
    result = _cifar_sample()
    target = "time ≤ 5 % of Retrain's on each seed timed"
    assert _verdicts(result)[target] is True
    slow = copy.deepcopy(result)
    run = next(r for r in slow["timings"][2]["runs"] if r["method"] == "rfa")
    run["seconds"] = (
        0.06 * next(r for r in slow["timings"][2]["runs"] if r["method"] == "retrain")["seconds"]
    )
    assert _verdicts(slow)[target] is False
    loaded = copy.deepcopy(result)
    loaded["timings"][1]["quiet"] = False
    assert _verdicts(loaded)[target] is None


def test_a_page_without_markers_or_a_missing_table_is_one_line(tmp_path, capsys):
    with pytest.raises(SummaryError, match="no summary markers") as err:
        with_summary("# Benchmarks\n", "x")
    assert "\n" not in str(err.value)
    results = tmp_path / "results"
    for name in TABLES[1:]:
        shutil.copytree(RESULTS / name, results / name)
    page = tmp_path / "README.md"
    page.write_text(README.read_text())
    assert main(["bench-summary", "--readme", str(page), "--results", str(results)]) == 2
    said = capsys.readouterr().err
    assert said.count("\n") == 1 and said.startswith("error: ") and TABLES[0] in said
    assert page.read_text() == README.read_text()  # nothing written


def test_an_oracle_fit_more_than_a_point_below_the_original_on_dr_is_missed():
    result = _cifar_sample()
    target = "Retrain's Acc(Dr) ≥ the original's − 1 (a full oracle)"
    assert _verdicts(result)[target] is False  # the 60-epoch oracles: 98.07 against 99.81
    dr0 = {r["seed"]: r["acc_dr"] for r in result["records"] if r["method"] == "original"}
    for r in result["records"]:
        if r["method"] == "retrain":
            r["acc_dr"] = dr0[r["seed"]] - 0.9
    assert _verdicts(result)[target] is True


def test_the_smallest_gap_row_gives_the_seed_by_seed_difference_to_the_best_baseline():
    result = _cifar_sample()
    by = {(r["method"], r["seed"]): r for r in result["records"]}
    diffs = [
        avg_gap(by["rfa", s], by["retrain", s]) - avg_gap(by["ft", s], by["retrain", s])
        for s in (1, 2, 3)
    ]
    for r in result["records"]:  # FT the best baseline, whatever the table holds
        if r["method"] in ("neggrad", "rl", "salun", "scrub"):
            r.update(acc_dr=0.0, acc_df=0.0, acc_dt=0.0)
    g, g_ft = (
        mean_of([avg_gap(by[m, s], by["retrain", s]) for s in (1, 2, 3)]) for m in ("rfa", "ft")
    )
    measured = next(m for t, _, m in checks(result) if t == "the smallest gap of the seven")
    assert measured.startswith(f"{g:.2f}; ft {g_ft:.2f}; RFA − ft by seed ")
    assert f"by seed {sum(diffs) / 3:.2f} [" in measured


def test_a_table_without_rfa_or_retrain_is_one_line(tmp_path):
    results = tmp_path / "results"
    for name in TABLES:
        shutil.copytree(RESULTS / name, results / name)
    src = results / TABLES[2] / "results.json"
    table = json.loads(src.read_text())
    table["records"] = [r for r in table["records"] if r["method"] != "rfa"]
    src.write_text(json.dumps(table))
    with pytest.raises(SummaryError, match="has no rfa records") as err:
        load(results)
    assert "\n" not in str(err.value)


def test_an_lr_at_an_untied_grid_end_is_missed_and_a_tied_one_is_not():
    result = _cifar_sample()
    target = "every method's lr inside its grid, or tied at its end"
    assert _verdicts(result)[target] is True  # every choice inside
    ft = result["config"]["tuning"]["methods"]["ft"]
    ft.update(lr=ft["grid"][-1], edge="highest", gaps=[5.0, 4.0, 3.0, 2.0, 1.0])
    assert _verdicts(result)[target] is False
    ft["gaps"] = [5.0, 4.0, 3.0, 1.0, 1.0]
    assert _verdicts(result)[target] is True


def test_a_table_run_without_baselines_leaves_their_rows_not_judged():
    result = _cifar_sample()
    kept = ("original", "retrain", "rfa")
    result["records"] = [r for r in result["records"] if r["method"] in kept]
    for t in result["timings"]:
        t["runs"] = [r for r in t["runs"] if r["method"] in kept]
    got = {target: (ok, said) for target, ok, said in checks(result)}
    assert got["the smallest gap of the seven"] == (None, "no baseline in this table")
    assert got["baselines' Acc(Dr) within 3 points of the original's"][0] is None
    assert got["gap ≤ 1.5"][0] is False and got["below the untouched original's gap"][0] is True
    gaps = summarise(result)["rfa"]["gap"]
    assert f"| rfa | {ci95(gaps)} |" in render({"t": result})


@pytest.mark.parametrize("within, expect", [(11.0, True), (0.1, False)])
def test_results_md_and_the_headline_judge_probes_by_the_one_bar(monkeypatch, within, expect):
    """Both pages read benchmarks/bars.py: moving its probe bar moves both verdicts."""
    from benchmarks import bars
    from benchmarks.report import summarise, targets

    monkeypatch.setattr(bars, "PROBE_WITHIN", within)
    result = json.loads((RESULTS / "cifar10-resnet20-class0-merged" / "results.json").read_text())
    headline = [ok for t, ok, _ in checks(result) if t.startswith("every probe within")]
    per_table = [ok for t, ok, _ in targets(result, summarise(result)) if "probe on Dft" in t]
    assert headline == [expect] and len(per_table) == 4 and set(per_table) == {expect}
