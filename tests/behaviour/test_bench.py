"""Benchmark plumbing on digits, the CIFAR ResNet loader on the real checkpoint, baselines."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from rich.console import Console

from components.forget import extract_forget_set
from components.models import ModelError, model_digest, to_input
from components.settings import BaselineSettings, Settings, TrainSettings, load_settings
from components.unlearning.baselines import BASELINES, saliency_mask
from components.unlearning.registry import METHODS
from components.unlearning.types import MethodConfig, UnlearnTask
from tests.conftest import ROOT, SHARED

CKPT = SHARED / "models" / "resnet_cifar10_akamaster" / "resnet20-12fca82f.th"
CIFAR_TEST = SHARED / "datasets" / "cifar10" / "test.npz"


def test_every_method_is_registered_with_one_signature():
    assert set(METHODS) == {"rfa", *BASELINES}


@pytest.mark.parametrize("name", sorted(BASELINES))
def test_baselines_run_and_leave_the_original_untouched(name, base_model, digits):
    fs = extract_forget_set(digits.train, set(digits.train.ids[:40].tolist()))
    task = UnlearnTask("sample", fs.forget, fs.retain, digits.heldout)
    digest = model_digest(base_model)
    cfg = MethodConfig(baseline=BaselineSettings(lr=0.005), train=TrainSettings(epochs=1))
    res = METHODS[name](base_model, task, cfg)
    assert model_digest(base_model) == digest
    with torch.no_grad():
        out = res.model(to_input(digits.test.x[:64]))
    assert torch.isfinite(out).all() and res.steps > 0 and res.seconds > 0
    assert model_digest(res.model) != digest


@pytest.mark.parametrize("name", ["rfa", "ft"])
def test_a_benched_method_reports_its_steps_to_the_live_display(name, base_model, digits):
    from rich.progress import Progress

    from benchmarks.harness import run_timed
    from benchmarks.live import steps_line

    fs = extract_forget_set(digits.train, set(digits.train.ids[:40].tolist()))
    task = UnlearnTask("sample", fs.forget, fs.retain, digits.heldout)
    cfg = MethodConfig(baseline=BaselineSettings(lr=0.005), train=TrainSettings(epochs=1))
    with Progress(console=Console(quiet=True)) as bar:
        res, _ = run_timed(name, base_model, task, cfg, steps_line(bar))
        (line,) = bar.tasks
    assert line.total and line.completed == res.steps == line.total  # the last step reported


def test_salun_mask_keeps_the_requested_share(base_model, digits):
    fs = extract_forget_set(digits.train, set(digits.train.ids[:40].tolist()))
    mask = saliency_mask(base_model, fs.forget, 0.3, torch.device("cpu"))
    share = sum(float(m.sum()) for m in mask.values()) / sum(m.numel() for m in mask.values())
    assert 0.28 <= share <= 0.32


def test_bench_writes_results_with_every_key(tmp_path, monkeypatch):
    from benchmarks.harness import BenchRun, run_bench

    monkeypatch.chdir(tmp_path)
    settings = Settings.model_validate({"train": {"epochs": 3}})
    run = BenchRun(
        dataset="digits", scenario="class", forget_class=2, seeds=[1],
        methods=["rfa", "ft", "retrain"], out=tmp_path / "out", oracle_epochs=3,
    )  # fmt: skip
    from benchmarks.provenance import stamp as stamp_of

    stamp = stamp_of("bench")  # the cli's label appends it to every write
    label = lambda r: {**r, "provenance": [stamp]}  # noqa: E731
    result = run_bench(run, settings, tmp_path / "cache", Console(quiet=True), label)
    saved = json.loads((tmp_path / "out" / "results.json").read_text())
    assert saved == json.loads(json.dumps(result)) and saved["provenance"] == [stamp]
    assert [r["method"] for r in saved["records"]] == ["original", "retrain", "rfa", "ft"]
    keys = {
        "method",
        "seed",
        "acc_dr",
        "acc_df",
        "acc_dt",
        "acc_drt",
        "acc_dft",
        "mia_efficacy",
        "loss_mia_auc",
        "probe_acc_dft",
        "act_dist_dt",
        "js_df",
        "seconds",
        "trainable_fraction",
    }
    for r in saved["records"]:
        assert keys <= set(r)
    rfa = saved["records"][2]
    assert (
        rfa["acc_dft"] <= 1.0
        and rfa["act_dist_dt"] is not None
        and 0 < rfa["trainable_fraction"] < 0.05
    )
    assert saved["records"][0]["seconds"] == 0.0 and saved["records"][1]["act_dist_dt"] == 0.0
    assert saved["records"][0]["cpu_seconds"] == 0.0
    assert all(
        r["cpu_seconds"] > 0 for r in saved["records"][1:]
    )  # CPU seconds beside the wall seconds
    assert saved["config"]["scenario"] == "class" and saved["config"]["packages"]["torch"]
    assert saved["config"]["precision"] == "fp32"  # auto, resolved on the CPU
    # The class table reads the forgotten class with probes RFA is not trained against too.
    for r in saved["records"]:
        for k in ("probe_acc_dft", "knn_acc_dft", "mlp_acc_dft", "early_probe_acc_dft"):
            assert r[k] is not None and 0 <= r[k] <= 100, (r["method"], k)
    md = (tmp_path / "out" / "results.md").read_text()
    assert "| rfa |" in md and "time / Retrain" in md and "## Targets" in md
    assert f"code {stamp['code_digest']})" in md  # the stamp's Code line, in the one write
    assert f"**Machine**: {stamp['machine']['cpu']}, " in md  # and the machine it ran on
    assert "threads), every method in fp32." in md
    assert "kNN probe Dft" in md and "MLP probe on Dft within 5 pt" in md
    assert "time ≤ 5 % of Retrain's, CPU seconds" in md
    # The oracle is cached: a second run reuses it (same weights, its first measured seconds)
    # instead of retraining.
    assert saved["records"][1]["oracle_cached"] is False
    rerun = run.model_copy(update={"methods": ["retrain"], "out": tmp_path / "out2"})
    again = run_bench(rerun, settings, tmp_path / "cache", Console(quiet=True))
    first, second = saved["records"][1], again["records"][1]
    assert second["method"] == "retrain" and second["oracle_cached"] is True
    assert second["seconds"] == first["seconds"] and second["acc_df"] == first["acc_df"]
    assert second["acc_dt"] == first["acc_dt"]


@pytest.mark.skipif(
    not CKPT.exists() or not CIFAR_TEST.exists(), reason="../shared model or data absent"
)
def test_resnet20_checkpoint_loads_with_its_published_accuracy():
    from components.checkpoints import load_akamaster

    model = load_akamaster(CKPT, "resnet20")
    d = np.load(CIFAR_TEST)
    x, y = d["x"][:1000].transpose(0, 3, 1, 2), d["y"][:1000]
    with torch.no_grad():
        acc = (model(to_input(x)).argmax(1).numpy() == y).mean()
    assert 0.89 <= acc <= 0.95  # 91.73 % on the full test set


def test_corrupt_resnet_checkpoint_is_a_clear_error(tmp_path):
    from components.checkpoints import load_akamaster

    bad = tmp_path / "bad.th"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(ModelError, match="cannot be read as weights only"):
        load_akamaster(bad, "resnet20")


def test_oracle_cache_key_changes_with_the_training_recipe_not_the_seed():
    from benchmarks.cache import train_key, training_recipe

    base = TrainSettings()
    assert train_key(base) == train_key(TrainSettings(seed=7))  # the seed is a key part of its own
    for change in (
        {"lr": 0.1},
        {"epochs": 3},
        {"optimizer": "sgd"},
        {"augment": True},
        {"precision": "bf16"},
    ):
        assert train_key(TrainSettings(**change)) != train_key(base), change
    # The committed oracles (benchmarks/oracles) are found under the recipes run.sh uses: the
    # CIFAR-10 tables' 60-epoch and the Fashion-MNIST 10 % table's 20-epoch bf16 Retrain, and the
    # Fashion-MNIST class table's, the params file's own (4 epochs, fp32).
    recipes = {"cifar10": [(60, "bf16")], "fashion_mnist": [(20, "bf16"), (None, None)]}
    keys = {}
    for dataset, runs in recipes.items():
        train = load_settings(ROOT / "benchmarks" / "params" / f"{dataset}.yaml").train
        keys[dataset] = {
            train_key(training_recipe(train, epochs=e, precision=pr)) for e, pr in runs
        }
    oracles = [p for p in (ROOT / "benchmarks" / "oracles").iterdir() if p.is_file()]
    assert {p.name.split("-")[0] for p in oracles} == set(recipes)
    for p in oracles:
        assert any(f"-t{k}-" in p.name for k in keys[p.name.split("-")[0]]), p.name


def test_oracle_key_separates_model_widths_and_a_wrong_width_checkpoint_is_a_model_error(digits):
    """A width-32 run once found the width-16 oracle of the same forget set and recipe and died in
    load_state_dict with a size-mismatch traceback."""
    from benchmarks.cache import oracle_key
    from components.models import build_model, load_model, make_spec, state_bytes

    narrow, wide = (make_spec("small_cnn", digits.train.x, 10, w) for w in (16, 32))
    keys = {
        oracle_key("digits", "small_cnn", spec, "ab" * 32, 0, TrainSettings())
        for spec in (narrow, wide, narrow)
    }
    assert len(keys) == 2
    with pytest.raises(ModelError, match="does not fit spec small_cnn: size mismatch"):
        load_model(wide, state_bytes(build_model(narrow)))


def test_training_recipe_applies_the_oracle_overrides_and_refuses_a_bad_one():
    from pydantic import ValidationError

    from benchmarks.cache import training_recipe

    base = TrainSettings(lr=0.05)
    assert training_recipe(base) == base  # no override: the params file's recipe
    longer = training_recipe(base, epochs=60, precision="bf16")
    assert (longer.epochs, longer.precision, longer.lr) == (60, "bf16", 0.05)
    with pytest.raises(ValidationError, match="precision"):
        training_recipe(base, precision="fp16")  # model_copy would have let this through


def test_time_ratios_use_each_unit_only_where_both_runs_measured_it():
    """A cached oracle from before CPU seconds were recorded has none: its CPU ratios are left out
    (not computed against zero or a wall time), while the wall ratios stand."""
    from benchmarks.report import render_markdown, summarise, targets

    def rec(method, seed, seconds, cpu):
        return {
            "method": method,
            "seed": seed,
            "acc_dr": 90.0,
            "acc_df": 0.0,
            "acc_dt": 88.0,
            "acc_drt": 90.0,
            "acc_dft": 0.0,
            "mia_efficacy": 100.0,
            "loss_mia_auc": 0.5,
            "probe_acc_dft": 80.0,
            "act_dist_dt": 0.1,
            "js_df": 0.01,
            "seconds": seconds,
            "cpu_seconds": cpu,
            "trainable_fraction": 0.04 if method == "rfa" else 1.0,
        }

    result = {
        "config": {"scenario": "class"},
        "records": [
            rec("original", 0, 0.0, 0.0),
            rec("retrain", 0, 1000.0, None),
            rec("rfa", 0, 40.0, 20.0),
            rec("ft", 0, 100.0, 80.0),
            rec("original", 1, 0.0, 0.0),
            rec("retrain", 1, 1000.0, 800.0),
            rec("rfa", 1, 30.0, 24.0),
            rec("ft", 1, 100.0, 60.0),
        ],
    }
    rows = summarise(result)
    assert rows["rfa"]["t_retrain"] == [0.04, 0.03] and rows["rfa"]["c_retrain"] == [0.03]
    assert rows["rfa"]["c_ft"] == [0.25, 0.4]
    got = {name: (ok, val) for name, ok, val in targets(result, rows)}
    assert got["time ≤ 5 % of Retrain's"] == (True, "3.50 % (4.0 % / 3.0 % by seed)")
    assert got["time ≤ 5 % of Retrain's, CPU seconds"] == (True, "3.00 %")
    assert got["time ≤ 50 % of FT's, CPU seconds"] == (True, "32.50 % (25.0 % / 40.0 % by seed)")
    # The same runs, one of which ended with another process on the machine: shown, not judged.
    result["config"].update(torch_threads=1, forget_class=0, seeds=[0, 1], device="cpu")
    result["config"].update(dataset="digits", model="small_cnn")
    for r in result["records"]:
        r["load_1m"] = 1.0
    result["records"][6]["load_1m"] = 2.4
    got = {name: (ok, val) for name, ok, val in targets(result, summarise(result))}
    assert got["time ≤ 5 % of Retrain's"] == (None, "3.50 % (4.0 % / 3.0 % by seed)")
    assert got["RFA trains ≤ 5 % of the parameters"][0] is True  # the rest is still judged
    md = render_markdown(result)
    assert "**Timed under load**" in md and "rfa@seed1 (2.4)" in md and "| – | 3.50 %" in md
    result["records"][6]["load_1m"] = 1.4  # its own thread and a little noise: quiet
    assert targets(result, summarise(result))[-4][1] is True
    assert "Timed under load" not in render_markdown(result)
    # A Retrain loaded from another device's training has no seconds: its load times nothing.
    result["records"][5].update(seconds=None, cpu_seconds=None, load_1m=6.2)
    assert "Timed under load" not in render_markdown(result)


def test_targets_flag_an_rfa_no_closer_to_retrain_than_the_untouched_original():
    """Sample unlearning on a base that barely memorises: RFA that leaves the model as it was meets
    "gap ≤ 2.0" and beats a baseline that damages Dr; the sanity row must say it did not forget."""
    from benchmarks.report import summarise, targets

    def rec(method, df, dr, dt, mia):
        return {
            "method": method,
            "seed": 0,
            "acc_df": df,
            "acc_dr": dr,
            "acc_dt": dt,
            "acc_drt": None,
            "acc_dft": None,
            "mia_efficacy": mia,
            "loss_mia_auc": 0.5,
            "probe_acc_dft": None,
            "act_dist_dt": None,
            "js_df": None,
            "seconds": 1.0,
            "cpu_seconds": 1.0,
            "trainable_fraction": 0.04 if method == "rfa" else 1.0,
        }

    records = [
        rec("original", 93.0, 92.8, 90.7, 8.4),
        rec("retrain", 91.1, 92.6, 90.7, 10.4),
        rec("ft", 89.6, 89.7, 88.4, 17.5),
    ]
    for rfa_df, rfa_mia, forgot in ((93.0, 8.4, False), (91.5, 10.0, True)):
        result = {
            "config": {"scenario": "sample"},
            "records": [*records, rec("rfa", rfa_df, 92.8, 90.7, rfa_mia)],
        }
        got = {name: ok for name, ok, _ in targets(result, summarise(result))}
        assert got["average gap to Retrain ≤ 2.0"] and got["gap smaller than ft's"]
        assert got["gap smaller than the untouched original's (did it forget?)"] is forgot


def test_a_bench_runs_every_method_under_rfas_precision(tmp_path, monkeypatch, capsys):
    """`rfa.precision` is the table's: the baselines get it with the device, the config records
    it resolved; a bf16 the CPU cannot run is one line before any training."""
    from benchmarks.harness import BenchRun, seed_bench, setup_bench
    from components import runtime
    from pipelines.cli import main

    monkeypatch.chdir(tmp_path)
    run = BenchRun(
        dataset="digits", scenario="class", forget_class=2, seeds=[1], methods=["ft", "rfa"],
        out=tmp_path / "out", oracle_epochs=3,
    )  # fmt: skip
    settings = Settings.model_validate({"train": {"epochs": 3}, "rfa": {"precision": "fp32"}})
    b = setup_bench(run, settings, tmp_path / "cache", Console(quiet=True))
    assert b.config["precision"] == "fp32" and b.config["rfa"]["precision"] == "fp32"
    cfg = seed_bench(b, 1, b.validation, probe=False).cfg
    assert cfg.baseline.precision == cfg.rfa.precision == "fp32"

    monkeypatch.setattr(runtime, "bf16_cpu_supported", lambda: False)
    params = tmp_path / "bf16.yaml"
    params.write_text("train:\n  epochs: 3\nrfa:\n  precision: bf16\n")
    code = main(["bench", "--params", str(params), "--methods", "retrain,ft", "--seeds", "1",
                 "--out", str(tmp_path / "refused")])  # fmt: skip
    assert code == 2 and not (tmp_path / "refused" / "results.json").exists()
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.startswith("error: precision 'bf16' needs a CPU with AVX512-BF16 or AMX"), line
    assert line.endswith(
        "set fp32 with --precision (the methods) and --oracle-precision "
        "(Retrain), or rfa.precision / train.precision in the params file"
    ), line
    assert not (tmp_path / ".cache" / "bench" / "oracles").exists()  # nothing trained
