"""Bench results name the code that computed them (benchmarks/provenance.py)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from benchmarks.merge import merge_results
from benchmarks.points import SOURCES
from benchmarks.provenance import _cpu_model, machine_line, provenance_line, stamp, stamped


def _git(root: Path, *args: str) -> str:
    return subprocess.run(
        ["git", "-C", str(root), *args], capture_output=True, text=True, check=True
    ).stdout.strip()


def _tree(root: Path) -> None:
    """The measured sources, one small module each, and a results file beside them."""
    for name in SOURCES:
        path = root / name / "m.py" if not name.endswith(".py") else root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("X = 1\n")
    (root / "results.json").write_text("{}\n")


def test_a_stamp_names_the_commit_and_only_code_changes_make_it_uncommitted(tmp_path):
    _tree(tmp_path)
    outside = stamp("bench", tmp_path)
    assert outside["commit"] is None and outside["uncommitted"] is None  # no git: unknown
    _git(tmp_path, "init", "-q")
    _git(tmp_path, "add", ".")
    _git(tmp_path, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "x")
    clean = stamp("bench", tmp_path)
    assert clean["commit"] == _git(tmp_path, "rev-parse", "HEAD") and clean["uncommitted"] is False
    assert clean["code_digest"] == outside["code_digest"]
    (tmp_path / "results.json").write_text('{"records": []}\n')  # what a bench itself writes
    assert stamp("bench", tmp_path)["uncommitted"] is False
    (tmp_path / "components" / "m.py").write_text("X = 2\n")
    edited = stamp("bench", tmp_path)
    assert edited["uncommitted"] is True and edited["code_digest"] != clean["code_digest"]
    assert "with uncommitted changes to the measured code" in provenance_line(
        {"provenance": [edited]}
    )


def test_merged_tables_keep_every_runs_stamps_in_order(tmp_path):
    _tree(tmp_path)
    config = {"scenario": "class", "seeds": [1], "lr_chosen": {}}
    one = stamped({"config": config, "records": [{"method": "ft", "seed": 1}]}, "bench", tmp_path)
    two = stamped(
        {"config": {**config, "seeds": [2]}, "records": [{"method": "ft", "seed": 2}]},
        "bench-time",
        tmp_path,
    )
    merged = stamped(merge_results([("a", one), ("b", two)]), "bench-merge", tmp_path)
    assert [s["command"] for s in merged["provenance"]] == ["bench", "bench-time", "bench-merge"]
    line = provenance_line(merged)
    assert line.startswith("**Code**: `bench` at no git (") and line.count("`bench") == 3
    assert provenance_line({"config": config, "records": []}) is None  # tables before stamps


def test_a_stamp_taken_at_the_start_names_the_code_that_ran_not_the_code_at_the_end(tmp_path):
    _tree(tmp_path)
    _git(tmp_path, "init", "-q")
    _git(tmp_path, "add", ".")
    _git(tmp_path, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "x")
    started = {**stamp("bench", tmp_path), "at": "2000-01-01T00:00:00Z"}
    (tmp_path / "components" / "m.py").write_text("X = 2\n")  # edited while the bench ran
    late = stamped({"records": []}, "bench", tmp_path)["provenance"][-1]
    kept = stamped({"records": []}, "bench", tmp_path, taken=started)["provenance"][-1]
    assert late["uncommitted"] is True and late["code_digest"] != started["code_digest"]
    assert kept["uncommitted"] is False and kept["code_digest"] == started["code_digest"]
    assert kept["at"] > started["at"]  # written when the bench finished


def test_a_stamp_names_the_machine_and_results_md_lists_each_machine_once(tmp_path):
    _tree(tmp_path)
    here = stamp("bench", tmp_path)["machine"]
    assert here["cpu"] and here["cpus"] >= 1 and isinstance(here["bf16_units"], bool)
    xeon = {"cpu": "Xeon", "cpus": 2, "bf16_units": True, "gpu": None, "torch": "2.14.1"}
    epyc = {**xeon, "cpu": "EPYC", "bf16_units": False}
    h200 = {**xeon, "cpus": 16, "gpu": "NVIDIA H200"}
    runs = [("bench", xeon, "a" * 40), ("bench-time", epyc, "b" * 40), ("bench", h200, "c" * 40),
            ("bench-merge", xeon, "a" * 40), ("bench-merge", xeon, "a" * 40)]  # fmt: skip
    stamps = [{"command": c, "machine": m, "commit": at} for c, m, at in runs]
    line = machine_line({"provenance": stamps})
    assert line == (
        "**Machine**: Xeon, 2 CPUs, bf16 units, torch 2.14.1 (`bench` at aaaaaaa, `bench-merge` at "
        "aaaaaaa); EPYC, 2 CPUs, no bf16 units (AVX512-BF16 / AMX), torch 2.14.1 (`bench-time` at "
        "bbbbbbb); Xeon, 16 CPUs, bf16 units, NVIDIA H200, torch 2.14.1 (`bench` at ccccccc)."
    )
    # Stamps made before machines were recorded are counted, not passed over in silence.
    older = {"command": "bench", "commit": "d" * 40}
    line = machine_line({"provenance": [older, older, stamps[0]]})
    assert line == (
        "**Machine**: Xeon, 2 CPUs, bf16 units, torch 2.14.1 (`bench` at aaaaaaa); "
        "not recorded by the other 2 stamps (older)."
    )
    assert machine_line({"provenance": [{"command": "bench"}]}) is None


def test_the_cpu_model_is_read_from_cpuinfo_and_else_from_platform(tmp_path, monkeypatch):
    import platform

    info = tmp_path / "cpuinfo"
    info.write_text("processor\t: 0\nvendor_id\t: AuthenticAMD\nmodel name\t: AMD EPYC 7763\n")
    assert _cpu_model(info) == "AMD EPYC 7763"
    monkeypatch.setattr(platform, "processor", lambda: "")  # as on Linux, where it is often empty
    monkeypatch.setattr(platform, "machine", lambda: "x86_64")
    assert _cpu_model(tmp_path / "absent") == "x86_64"
    monkeypatch.setattr(platform, "machine", lambda: "")
    assert _cpu_model(tmp_path / "absent") == "unknown"
