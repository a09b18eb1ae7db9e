"""`bench-merge` joins runs over other seeds or other methods (benchmarks/merge.py)."""

from __future__ import annotations

import copy
import json

import pytest

from benchmarks.merge import MergeError, merge_results
from tests.conftest import ROOT

FULL = json.loads((ROOT / "benchmarks/results/digits-class0/results.json").read_text())
SHARED = ("original", "retrain")


def _part(methods: list[str]) -> dict:
    """The committed table as a process running only `methods` (and the seeds' oracles) writes
    it: its records, choices and tuning for those methods alone."""
    cfg = copy.deepcopy(FULL["config"])
    mine = [m for m in cfg["methods"] if m in methods]
    cfg["methods"] = ["retrain", *mine]
    cfg["lr_chosen"] = {m: v for m, v in cfg["lr_chosen"].items() if m in methods}
    cfg["tuning"]["methods"] = {m: v for m, v in cfg["tuning"]["methods"].items() if m in methods}
    records = [copy.deepcopy(r) for r in FULL["records"] if r["method"] in (*SHARED, *methods)]
    return {"config": cfg, "records": records}


def _key(r: dict) -> tuple:
    return r["seed"], r["method"]


def test_runs_over_other_methods_make_the_table_a_run_over_all_of_them_makes():
    a, b = _part(["rfa", "ft"]), _part(["neggrad", "rl", "salun", "scrub"])
    for r in b["records"]:  # the second process read the same oracles back from the cache
        if r["method"] == "retrain":
            r["oracle_cached"], r["load_1m"] = True, 9.0
    merged = merge_results([("a", a), ("b", b)])
    assert sorted(merged["records"], key=_key) == sorted(FULL["records"], key=_key)
    cfg = merged["config"]
    assert cfg["lr_chosen"] == FULL["config"]["lr_chosen"]
    assert cfg["tuning"] == FULL["config"]["tuning"]
    assert set(cfg["methods"]) == set(FULL["config"]["methods"])
    assert cfg["grids"] == FULL["config"]["grids"] and cfg["recipes"] == FULL["config"]["recipes"]


def test_a_method_takes_its_grid_and_recipe_from_the_run_that_ran_it():
    a, b = _part(["rfa"]), _part(["scrub"])
    a["config"]["grids"]["scrub"] = [1.0, 2.0, 4.0, 8.0, 16.0]  # a's grid for a method it never ran
    a["config"]["recipes"]["scrub"] = {"epochs": 99}
    merged = merge_results([("a", a), ("b", b)])["config"]
    assert merged["grids"]["scrub"] == FULL["config"]["grids"]["scrub"]
    assert merged["recipes"]["scrub"] == FULL["config"]["recipes"]["scrub"]


def test_rfa_settings_follow_the_run_that_ran_rfa():
    """`rfa` and `lora` are read by RFA alone: a baseline's run made before an RFA setting
    existed merges with RFA's run, and the table states the settings RFA ran with."""
    a, b = _part(["scrub"]), _part(["rfa"])
    b["config"]["rfa"] = {**b["config"]["rfa"], "retain_guard_pt": 1.0}
    merged = merge_results([("a", a), ("b", b)])["config"]
    assert merged["rfa"]["retain_guard_pt"] == 1.0 and merged["lora"] == b["config"]["lora"]
    assert merged["scenario"] == a["config"]["scenario"]


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        (lambda b: _retrain(b).update(acc_dt=1.0), "retrain row for seed 1 differs"),
        (lambda b: b["records"].append({**_row(b, "scrub"), "method": "rfa"}), "repeats method"),
        (lambda b: b["config"]["grids"].update(rfa=[9.0] * 5), "rfa with another grids entry"),
        (lambda b: b["config"].update(scenario="sample"), "differs in scenario"),
        (lambda b: b["config"]["rfa"].update(retain_guard_pt=7.5), "other rfa or lora settings"),
        (lambda b: b["config"].update(precision="bf16"), "differs in precision"),
    ],
)
def test_runs_that_do_not_share_oracles_or_settings_are_refused(change, needle):
    a, b = _part(["rfa"]), _part(["scrub"])
    b["config"]["methods"].append("rfa")  # b claims rfa too: its settings must then agree
    b["config"]["lr_chosen"]["rfa"] = a["config"]["lr_chosen"]["rfa"]
    change(b)
    with pytest.raises(MergeError, match=needle):
        merge_results([("a", a), ("b", b)])


def _row(result: dict, method: str) -> dict:
    return next(r for r in result["records"] if r["method"] == method and r["seed"] == 1)


def _retrain(result: dict) -> dict:
    return _row(result, "retrain")


def test_a_timed_tables_timing_carries_into_a_merge_with_new_methods():
    """A merged table timed in one process (bench-time), joined with runs of further methods,
    keeps that section; two timed runs, or a timing at another lr, are refused."""
    from benchmarks.report import render_markdown

    # A one-seed timing as tables written before 8e9fa4d hold it (`timing`) is read as well.
    section = copy.deepcopy(FULL["timings"][0])
    section["runs"] = [r for r in section["runs"] if r["method"] not in ("rl", "salun")]
    timed = {**_part(["rfa", "ft", "neggrad", "scrub"]), "timing": section}
    merged = merge_results([("timed", timed), ("new", _part(["rl", "salun"]))])
    assert merged["timings"] == [section] and "timing" not in merged
    assert "## Time in one process" in render_markdown(merged)
    untimed = merge_results([("a", _part(["rfa"])), ("b", _part(["ft"]))])
    assert "timing" not in untimed and "timings" not in untimed
    with pytest.raises(MergeError, match="each timed"):
        merge_results([("timed", timed), ("again", {**_part(["rl"]), "timings": FULL["timings"]})])
    # A table timed on several seeds keeps every seed's section.
    two = {**{k: v for k, v in timed.items() if k != "timing"},
           "timings": [section, {**section, "seed": 2}]}  # fmt: skip
    assert merge_results([("two", two), ("new", _part(["rl"]))])["timings"] == two["timings"]
    other = copy.deepcopy(timed)
    other["timing"]["runs"][1]["lr"] = 1.0  # rfa timed at an lr the table did not choose
    with pytest.raises(MergeError, match="not the merged table's choice"):
        merge_results([("other", other), ("new", _part(["rl", "salun"]))])
