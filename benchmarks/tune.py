"""One RFA tuning run on CIFAR-10 / ResNet-20 or Fashion-MNIST / small CNN (seed 0's forget set).

    python -m benchmarks.tune --set rfa.class_unlearning.probe_weight=15
    python -m benchmarks.tune --scenario sample --set rfa.sample_unlearning.forget_batch=64
    python -m benchmarks.tune --dataset fashion_mnist --set rfa.retain_batch=8 --set lora.rank=4

Settings come from `benchmarks/params/<dataset>.yaml`; each `--set dotted.key=value` (value in YAML)
replaces one key, and the result is validated like any params file, so a misspelt key fails with its
dotted path. `--base-epochs` / `--base-precision` pick the longer-trained cached base that `unlearn
bench --oracle-epochs / --oracle-precision` trains. `--gap` adds the average gap to seed 0's Retrain
on the validation split, the number `unlearn bench` chooses every grid point by (so RFA's other
settings are chosen the same way and on the same split). Prints one JSON line: seconds, steps,
trainable share and the accuracies; class: Acc(Dft), Acc(Drt) and the feature probe as the benchmark
scores them; sample: Acc(Df), Acc(Dt), |Df - Dt|, Acc(Dr), MIA-efficacy on Df next to its non-member
baseline, and the pipeline's sample gates that fail. Everything is scored on the validation split
(the report split is never read). Not a benchmark: no baselines, no report split; it sizes a
setting.
"""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import torch
import typer
import yaml

from benchmarks.cache import (
    forget_ids,
    load_bench_data,
    oracle,
    oracle_path,
    original_model,
    stratified_parts,
    training_recipe,
)
from benchmarks.harness import run_timed
from benchmarks.report import avg_gap
from components.data import Split
from components.evaluation import EvalSplits, evaluate
from components.forget import extract_forget_set
from components.gates import sample_gates
from components.models import to_input
from components.reference import feature_probe
from components.settings import Settings, SettingsError, TrainSettings, parse_settings
from components.unlearning.rfa import rfa
from components.unlearning.types import MethodConfig, UnlearnTask

SHARED = "../shared"
MODELS = {
    "cifar10": ("resnet20", f"{SHARED}/models/resnet_cifar10_akamaster/resnet20-12fca82f.th"),
    "fashion_mnist": ("small_cnn", None),
}


@torch.no_grad()
def _acc(model: torch.nn.Module, split: Split) -> float:
    pred = torch.cat(
        [model(to_input(split.x[i : i + 1000])).argmax(1) for i in range(0, len(split), 1000)]
    )
    return float(100 * (pred.numpy() == split.y).mean())


def with_overrides(raw: dict, pairs: list[str]) -> Settings:
    """The params mapping with each `dotted.key=value` applied (value parsed as YAML), validated."""
    raw = copy.deepcopy(raw)
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep:
            raise SettingsError(f"--set {pair!r}: expected dotted.key=value")
        *parents, leaf = key.split(".")
        node = raw
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = yaml.safe_load(value)
    return parse_settings(raw, source="params with --set overrides")


def main(
    dataset: str = "cifar10",
    scenario: str = "class",
    overrides: list[str] | None = None,
    base_epochs: int | None = None,
    base_precision: str | None = None,
    gap: bool = False,
) -> dict:
    torch.set_num_threads(1)
    arch, ckpt = MODELS[dataset]
    raw = yaml.safe_load(Path(f"benchmarks/params/{dataset}.yaml").read_text())
    s = with_overrides(raw, overrides or [])
    data = load_bench_data(dataset, f"{SHARED}/datasets/{dataset}", s.bench.heldout_seed)
    ds, val = data.ds, data.validation  # scored on validation: the report split is never read
    # Halves of it where one side is fitted (the attack, the probe) and the other scored.
    val_a, val_b = stratified_parts(val, 2, 0)
    cpu = torch.device("cpu")
    train = training_recipe(s.train, base_epochs, base_precision)
    original, spec = original_model(
        ds, arch, ckpt, Path(".cache") / "bench", train, cpu, s.model.width
    )
    fs = extract_forget_set(ds.train, forget_ids(ds, scenario, 0, 0.1, 0), max_fraction=0.5)
    classes = (0,) if scenario == "class" else ()
    task = UnlearnTask(scenario, fs.forget, fs.retain, ds.heldout, classes)
    lora, cfg = s.lora, s.rfa
    res = rfa(original, task, lora, cfg)
    if gap:  # what `unlearn bench` chooses RFA's lr by, so a setting is chosen the same way
        ev = s.bench.evaluation
        splits = EvalSplits.build(fs.forget, fs.retain, val, classes, ev)
        retrain = _retrain(original, task, train, spec, ds.name, arch, fs.forget)
        o, m = evaluate(retrain, splits, ev, cpu), evaluate(res.model, splits, ev, cpu)
        gap_to_retrain = {"gap_to_retrain": round(avg_gap(m, o), 4)}
    else:
        gap_to_retrain = {}
    out = gap_to_retrain | {
        "overrides": overrides or [],
        "seconds": round(res.seconds, 1),
        "steps": res.steps,
        "trainable": round(res.trainable_fraction, 4),
        "first": res.history[0],
        "last": res.history[-1],
        "checks": [
            (int(h["step"]), round(h["check_acc"], 1)) for h in res.history if "check_acc" in h
        ][-12:],
    }
    if scenario == "sample":
        # The pipeline's own sample gates, Dt = the validation split (the MIA gate's non-member
        # baseline is Dt cross-fitted, as in the pipeline).
        ev = s.bench.evaluation  # as `unlearn bench` scores it
        splits = EvalSplits.build(fs.forget, fs.retain, val, (), ev)
        m, m0 = evaluate(res.model, splits, ev, cpu), evaluate(original, splits, ev, cpu)
        # The pipeline's own sample gates (params' gates.*, noise allowances included): what a
        # setting is chosen on, so the sweep never reads the oracle it is later judged against.
        failed = {
            g.name: [round(g.value, 2), round(g.effective_threshold, 2)]
            for g in sample_gates(m0, m, s.gates)
            if not g.passed
        }
        # Every number from the same evaluate() pass the gates read (Acc(Dr) on the same random
        # retained images the gate reads).
        df, dt = m["acc_df"], m["acc_dt"]
        return out | {
            "acc_df": round(df, 2),
            "acc_dt": round(dt, 2),
            "df_minus_dt": round(df - dt, 2),
            "acc_dr_eval": round(m["acc_dr"], 2),
            "mia_df": round(m["mia_efficacy"], 2),
            "mia_unseen": round(m["mia_unseen"], 2),
            "loss_mia_auc": round(m["loss_mia_auc"], 4),
            "gates_failed": failed,
        }
    forgotten_test = val.take(val.y == 0)  # class 0, as the committed tables
    return out | {
        "acc_dft": _acc(res.model, forgotten_test),
        "acc_drt": round(_acc(res.model, val.take(val.y != 0)), 2),
        "acc_df_1000": _acc(res.model, fs.forget.take(np.arange(1000))),
        "probe_acc_dft": feature_probe(
            res.model, val_b, val_a.take(val_a.y == 0), s.bench.probe_layer, cpu, 0
        ),
    }


def _retrain(
    original: torch.nn.Module, task: UnlearnTask, train: TrainSettings, spec: dict, name: str,
    arch: str, forget: Split,
) -> torch.nn.Module:  # fmt: skip
    """Seed 0's Retrain, the bench's own (the same cache file; trained if missing)."""
    path = oracle_path(Path(".cache") / "bench", name, arch, spec, forget, 0, train)
    cfg = MethodConfig(train=train.model_copy(update={"seed": 0}))
    model, _ = oracle(original, task, cfg, spec, path, run_timed)
    return model


def cli(
    dataset: str = typer.Option("cifar10", help="cifar10 | fashion_mnist"),
    scenario: str = typer.Option("class", help="class (forget class 0) | sample (10 % random)"),
    set_: list[str] = typer.Option([], "--set", help="dotted.key=value (repeatable)"),
    base_epochs: int | None = typer.Option(None, help="Epochs of the cached base (small_cnn)."),
    base_precision: str | None = typer.Option(None, help="fp32 | bf16 of the cached base."),
    gap: bool = typer.Option(False, help="Also the average gap to seed 0's Retrain."),
) -> None:
    """One RFA run with the given overrides; one JSON line on stdout."""
    print(json.dumps(main(dataset, scenario, set_, base_epochs, base_precision, gap)))


if __name__ == "__main__":
    typer.run(cli)
