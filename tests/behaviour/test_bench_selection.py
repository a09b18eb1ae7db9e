"""The benchmark's selection is clean: reference, validation and report splits are disjoint; only
RFA's target reads the reference; every choice is made on the tuning seed and the validation
split, and the reported seeds exclude the tuning seed."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest
from pydantic import ValidationError
from rich.console import Console

from benchmarks import harness
from benchmarks.cache import load_bench_data, stratified_parts
from components.settings import Settings
from tests.conftest import SHARED

CIFAR = SHARED / "datasets" / "cifar10"


def _ids(split) -> set[str]:
    return set(split.ids.tolist())


@pytest.mark.parametrize("dataset", ["digits", "cifar10"])
def test_reference_validation_and_report_are_disjoint_and_stratified(dataset):
    if dataset == "cifar10" and not (CIFAR / "test.npz").exists():
        pytest.skip("../shared CIFAR-10 absent")
    data = load_bench_data(dataset, str(CIFAR), 12345)
    reference, validation, report = data.ds.heldout, data.validation, data.ds.test
    parts = [_ids(reference), _ids(validation), _ids(report)]
    assert all(len(p) > 0 for p in parts)
    assert not (parts[0] & parts[1]) and not (parts[0] & parts[2]) and not (parts[1] & parts[2])
    assert not set().union(*parts) & _ids(data.ds.train)  # none of them is trained on
    # Every class in each, in (nearly) the same share.
    for split in (validation, report):
        counts = np.bincount(split.y, minlength=data.ds.num_classes)
        assert counts.min() > 0 and counts.max() - counts.min() <= max(2, 0.1 * counts.max())
    if dataset == "cifar10":  # the official 10,000 test images, in thirds
        assert sum(len(p) for p in parts) == 10000 and min(map(len, parts)) >= 3330


def test_stratified_parts_cover_the_split_once(digits):
    a, b, c = stratified_parts(digits.test, 3, 7)
    assert sorted(_ids(a) | _ids(b) | _ids(c)) == sorted(_ids(digits.test))
    assert len(a) + len(b) + len(c) == len(digits.test)


def test_a_reported_seed_cannot_be_the_tuning_seed():
    with pytest.raises(ValidationError, match="chooses the hyper-parameters"):
        harness.BenchRun(methods=["ft"], seeds=[0, 1], tune_seed=0)


def _scrambled_reference(real):
    def load(name, data_dir, seed):
        data = real(name, data_dir, seed)
        ref = data.ds.heldout
        noise = np.random.default_rng(0).integers(0, 256, ref.x.shape, dtype=np.uint8)
        scrambled = dataclasses.replace(ref, x=noise, y=np.roll(ref.y, 1))
        return dataclasses.replace(data, ds=dataclasses.replace(data.ds, heldout=scrambled))

    return load


def _numbers(result: dict) -> tuple:
    timing = {"seconds", "cpu_seconds", "oracle_cached", "load_1m"}  # the machine, not the data
    records = [{k: v for k, v in r.items() if k not in timing} for r in result["records"]]
    return records, result["config"]["tuning"]


def test_only_rfa_reads_the_reference_split(tmp_path, monkeypatch):
    """FT and Retrain scored, tuned and gated with the reference split replaced by noise come
    out identical: no metric, attack baseline, probe or choice reads it."""
    monkeypatch.chdir(tmp_path)
    settings = Settings.model_validate({"train": {"epochs": 3}})
    run = harness.BenchRun(
        dataset="digits", scenario="class", forget_class=2, seeds=[1],
        methods=["ft", "retrain"], oracle_epochs=3,
    )  # fmt: skip
    quiet = Console(quiet=True)
    first = harness.run_bench(run.model_copy(update={"out": tmp_path / "a"}), settings,
                              tmp_path / "cache", quiet)  # fmt: skip
    monkeypatch.setattr(harness, "load_bench_data", _scrambled_reference(load_bench_data))
    second = harness.run_bench(run.model_copy(update={"out": tmp_path / "b"}), settings,
                               tmp_path / "cache", quiet)  # fmt: skip
    assert _numbers(first) == _numbers(second)
    tuning = first["config"]["tuning"]
    assert tuning["seed"] == 0 and tuning["split"] == "validation"
    ft = tuning["methods"]["ft"]
    assert ft["grid"] == list(settings.bench.grids["ft"]) and ft["lr"] in ft["grid"]
    assert len(ft["gaps"]) == len(ft["grid"]) and all(g is not None for g in ft["gaps"])
    assert ft["lr"] == ft["grid"][int(np.argmin(ft["gaps"]))]
    (rec,) = [r for r in first["records"] if r["method"] == "ft"]
    assert rec["seed"] == 1 and rec["lr"] == ft["lr"]
    md = (tmp_path / "a" / "results.md").read_text()
    assert "chosen on seed 0's forget set" in md and "report split" in md
    assert json.loads((tmp_path / "a" / "results.json").read_text())["config"]["splits"]


def test_intervals_are_t_intervals_over_seeds_and_std_is_the_sample_one():
    from benchmarks.report import _ms, intervals

    rows = {"rfa": {"seed": [1, 2], "gap": [1.0, 3.0], "acc_df": [90.0, 90.0],
                    "acc_dt": [], "mia_efficacy": [None, 5.0]}}  # fmt: skip
    (*_, line) = intervals(rows, ["rfa"])
    # mean 2, s = sqrt(2), t(0.975, 1) = 12.706: half-width 12.71
    assert line == "| rfa | 2.00 [-10.71, 14.71] | 90.00 [90.00, 90.00] | – | – |"
    assert _ms([1.0, 3.0]) == "2.00 ± 1.41"  # sample (n - 1) standard deviation
    assert intervals({"rfa": {"seed": [1]}}, ["rfa"]) == []
