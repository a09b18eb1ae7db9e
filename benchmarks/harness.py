"""`unlearn bench`: RFA side by side with the baselines on one dataset / model / scenario.

Writes `results.json` (config + one record per method and seed, plus `original`) and
`results.md` (mean ± std, gaps to Retrain, time ratios to Retrain and FT from the same run).
What runs is a `BenchRun` (the command line) and a params file's settings; RFA uses the file's
`lora` and `rfa` sections as written, the baselines its `bench` section.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field, field_validator
from rich.console import Console
from rich.progress import Progress
from torch import nn

from benchmarks.cache import (
    forget_ids,
    load_bench_data,
    oracle,
    oracle_key,
    original_model,
    training_recipe,
)
from benchmarks.report import avg_gap, render_markdown
from components.checkpoints import check_layers
from components.data import Dataset, Split
from components.evaluation import EvalSplits, evaluate
from components.forget import ForgetSplit, extract_forget_set, forget_manifest, manifest_sha256
from components.grids import grid_edge
from components.metrics import predict
from components.models import ModelError, build_model, make_spec, model_digest, to_input
from components.reference import activation_distance, feature_probe, js_divergence
from components.runtime import resolve_device
from components.settings import Settings
from components.unlearning.registry import METHODS, get_method
from components.unlearning.types import MethodConfig, UnlearnResult, UnlearnTask
from pipelines.provenance import package_versions

KEYS = ("acc_dr", "acc_df", "acc_dt", "acc_drt", "acc_dft", "mia_efficacy", "loss_mia_auc")
EMPTY = {"probe_acc_dft": None, "seconds": None, "cpu_seconds": None, "trainable_fraction": None,
         "act_dist_dt": None, "js_df": None}  # fmt: skip


class BenchRun(BaseModel):
    """What one `unlearn bench` runs (the command line's choices, validated)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    dataset: Literal["digits", "fashion_mnist", "cifar10"] = "digits"
    data_dir: Path | None = None
    model: str = "small_cnn"
    checkpoint: Path | None = None
    scenario: Literal["class", "sample"] = "class"
    forget_class: int = 0
    fraction: float = Field(0.1, gt=0, lt=1)
    seeds: list[int] = Field([0], min_length=1)
    methods: list[str] = Field(min_length=1)
    out: Path = Path("benchmarks/results/run")
    oracle_epochs: int | None = Field(None, ge=1)
    oracle_precision: Literal["fp32", "bf16"] | None = None

    @field_validator("methods")
    @classmethod
    def _known(cls, names: list[str]) -> list[str]:
        unknown = [m for m in names if m not in METHODS]
        if unknown:
            raise ValueError(f"unknown methods {unknown}; known: {sorted(METHODS)}")
        return names

    def ordered_methods(self) -> list[str]:
        """Retrain first: every other method's gaps are measured against it."""
        return (["retrain"] if "retrain" in self.methods else []) + [
            m for m in self.methods if m != "retrain"
        ]


def run_timed(
    name: str, original: nn.Module, task: UnlearnTask, cfg: MethodConfig
) -> tuple[UnlearnResult, float]:
    """Run a method; also return the CPU seconds it used (all threads of this process).

    Wall seconds on a shared machine grow with whatever else runs; CPU seconds do not, so ratios
    of them compare methods fairly when the load changed between (or during) their runs. On CUDA
    they count host work only: there the wall seconds are the measure."""
    c0 = time.process_time()
    res = get_method(name)(original, task, cfg)
    return res, time.process_time() - c0


@dataclass
class SeedBench:
    """One seed's forget set, its evaluation splits and its method configuration."""

    seed: int
    fs: ForgetSplit
    task: UnlearnTask
    cfg: MethodConfig
    measure: Callable[[nn.Module], dict]
    oracle_rec: dict | None = None
    oracle_preds: dict | None = None


@torch.no_grad()
def _finite(model: nn.Module, split: Split, device: torch.device) -> bool:
    """A diverged baseline (NaN / inf outputs) is reported as such, not scored."""
    x = to_input(split.x[:256]).to(device)
    return bool(torch.isfinite(model.to(device).eval()(x)).all())


def _record(method: str, seed: int, m: dict, extra: dict) -> dict:
    return {"method": method, "seed": seed, **{k: m.get(k) for k in KEYS}, **extra}


def _best_of_grid(
    name: str, original: nn.Module, sb: SeedBench, settings: Settings, is_finite: Callable,
    log: Callable[[str], None],
) -> tuple[UnlearnResult, dict, float | None, float, int] | None:  # fmt: skip
    """Run a method with its recipe (bench.recipes) over its lr grid (bench.grids); keep the
    setting closest to Retrain (the first one without an oracle). Diverged settings are skipped;
    None if all diverged. The last value is the chosen point's index in the grid."""
    bench, best = settings.bench, None
    grid = bench.grids.get(name, (None,))
    for i, lr in enumerate(grid):
        cfg = sb.cfg
        if lr is not None:
            recipe = {**bench.recipes.get(name, {}), "lr": lr}
            cfg = replace(sb.cfg, baseline=sb.cfg.baseline.model_copy(update=recipe))
        res, cpu = run_timed(name, original, sb.task, cfg)
        if not is_finite(res.model):
            log(f"{name} diverged at lr={lr}; skipped")
            continue
        m = sb.measure(res.model)
        gap = avg_gap(_record(name, 0, m, {}), sb.oracle_rec) if sb.oracle_rec else 0.0
        if best is None or gap < best[0]:
            best = (gap, res, m, lr, cpu, i)
    return None if best is None else best[1:]


def write_results(out: Path, config: dict, records: list[dict]) -> dict:
    result = {"config": config, "records": records}
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(result, indent=1) + "\n")
    (out / "results.md").write_text(render_markdown(result))
    return result


@dataclass
class Bench:
    """The run's fixed parts: data, the original model, settings, device and output."""

    run: BenchRun
    settings: Settings
    ds: Dataset
    original: nn.Module
    spec: dict
    device: torch.device
    cache: Path
    console: Console
    config: dict
    records: list[dict]


def run_bench(run: BenchRun, settings: Settings, cache: Path, console: Console) -> dict:
    """Every method of `run` over every seed; results.json / results.md written after each."""
    bench = _setup(run, settings, cache, console)
    with Progress(console=console, transient=False) as bar:
        job = bar.add_task("bench", total=len(run.seeds) * (len(run.methods) + 1))
        for seed in run.seeds:
            sb = _seed_bench(bench, seed)
            m0 = sb.measure(bench.original)
            extra = {**EMPTY, "probe_acc_dft": m0["probe_acc_dft"], "seconds": 0.0,
                     "cpu_seconds": 0.0, "trainable_fraction": 0.0}  # fmt: skip
            bench.records.append(_record("original", seed, m0, extra))
            bar.advance(job)
            for name in run.ordered_methods():
                bar.update(job, description=f"seed {seed}: {name}")
                bench.records.append(_method_record(bench, sb, name))
                write_results(run.out, bench.config, bench.records)  # a stopped run keeps these
                bar.advance(job)
    return write_results(run.out, bench.config, bench.records)


def _setup(run: BenchRun, settings: Settings, cache: Path, console: Console) -> Bench:
    device = resolve_device(settings.rfa.device)
    # peft imports transformers (~8 s on this CPU): a once-per-process cost like torch's own
    # import, which no method's seconds should carry.
    import peft  # noqa: F401

    ds = load_bench_data(run.dataset, _opt(run.data_dir), settings.bench.heldout_seed)
    train_cfg = training_recipe(settings.train, run.oracle_epochs, run.oracle_precision)
    settings = settings.model_copy(update={"train": train_cfg})
    _check_layer_names(run, settings, ds)  # before any training: a typo costs nothing
    original, spec = original_model(
        ds, run.model, _opt(run.checkpoint), cache, train_cfg, device, settings.model.width
    )
    config = {
        "dataset": run.dataset, "model": run.model, "scenario": run.scenario,
        "forget_class": run.forget_class if run.scenario == "class" else None,
        "fraction": run.fraction if run.scenario == "sample" else None,
        "seeds": run.seeds, "methods": run.methods, "device": str(device),
        "torch_threads": torch.get_num_threads(), "packages": package_versions(),
        "original_digest": model_digest(original), "lr_chosen": {},
        "grids": {k: list(v) for k, v in settings.bench.grids.items()},
        "recipes": settings.bench.recipes,
        "rfa": settings.rfa.model_dump(mode="json"), "lora": settings.lora.model_dump(mode="json"),
        "oracle_train": train_cfg.model_dump(mode="json"),
    }  # fmt: skip
    return Bench(run, settings, ds, original, spec, device, cache, console, config, [])


def _check_layer_names(run: BenchRun, settings: Settings, ds: Dataset) -> None:
    """The params file's LoRA targets, taps and probe layer must name layers of the model: they
    are used as written, never replaced by an architecture's defaults. ModelError otherwise."""
    spec = make_spec(run.model, ds.train.x[:16], ds.num_classes, settings.model.width)
    arch = build_model(spec)  # the architecture only: its statistics and weights do not matter
    check_layers(arch, settings.lora.target_modules, tuple(settings.rfa.taps))
    if settings.bench.probe_layer not in dict(arch.named_modules()):
        raise ModelError(f"bench.probe_layer {settings.bench.probe_layer!r} names no layer")


def _opt(p: Path | None) -> str | None:
    return str(p) if p is not None else None


def _seed_bench(b: Bench, seed: int) -> SeedBench:
    run, ds, s = b.run, b.ds, b.settings
    forget_class = run.forget_class if run.scenario == "class" else None
    ids = forget_ids(ds, run.scenario, forget_class, run.fraction, seed)
    fs = extract_forget_set(ds.train, ids, max_fraction=0.5)
    classes = (forget_class,) if forget_class is not None else ()
    task = UnlearnTask(run.scenario, fs.forget, fs.retain, ds.heldout, classes)
    splits = EvalSplits.build(
        fs.forget, fs.retain, ds.test, ds.heldout, classes, s.bench.evaluation
    )
    forgotten_test = ds.test.take(np.isin(ds.test.y, np.array(classes))) if classes else None

    def measure(model: nn.Module) -> dict:
        m = evaluate(model, splits, s.bench.evaluation, b.device)
        m["probe_acc_dft"] = None
        if forgotten_test is not None:
            m["probe_acc_dft"] = feature_probe(
                model, ds.heldout, forgotten_test, s.bench.probe_layer, b.device, seed
            )
        return m

    cfg = MethodConfig(
        lora=s.lora,
        rfa=s.rfa.model_copy(update={"seed": seed}),
        baseline=s.bench.baseline.model_copy(update={"seed": seed, "device": s.rfa.device}),
        train=s.train.model_copy(update={"seed": seed}),
    )
    return SeedBench(seed, fs, task, cfg, measure)


def _method_record(b: Bench, sb: SeedBench, name: str) -> dict:
    """Run (or load, for a cached oracle) one method on one seed and score it."""
    if name == "retrain":
        manifest_sha = manifest_sha256(forget_manifest(sb.fs.forget))
        key = oracle_key(b.ds.name, b.run.model, b.spec, manifest_sha, sb.seed, b.settings.train)
        path = b.cache / "oracles" / key
        model, meta = oracle(b.original, sb.task, sb.cfg, b.spec, path, run_timed)
        m, seconds, share = sb.measure(model), meta["seconds"], 1.0
        extra = {"cpu_seconds": meta["cpu_seconds"], "oracle_cached": meta["oracle_cached"]}
    else:
        found = _best_of_grid(
            name, b.original, sb, b.settings, lambda mdl: _finite(mdl, b.ds.test, b.device),
            lambda msg: b.console.print(f"seed {sb.seed}: {msg}"),
        )  # fmt: skip
        if found is None:
            return {"method": name, "seed": sb.seed, "diverged": True,
                    **dict.fromkeys(KEYS), **EMPTY}  # fmt: skip
        res, m, lr, cpu, index = found
        model, seconds, share = res.model, res.seconds, res.trainable_fraction
        edge = grid_edge(index, len(b.settings.bench.grids.get(name, ())))
        extra = {"cpu_seconds": cpu, "lr": lr, "steps": res.steps, "stop_reason": res.stop_reason,
                 "lr_at_grid_edge": edge}  # fmt: skip
        if lr is not None:
            b.config["lr_chosen"][f"{name}@seed{sb.seed}"] = lr
    return _scored(b, sb, name, model, m, seconds, share, extra)


def _scored(
    b: Bench, sb: SeedBench, name: str, model: nn.Module, m: dict, seconds: float | None,
    share: float, extra: dict,
) -> dict:  # fmt: skip
    """The method's record with the reference metrics against this seed's Retrain, if run."""
    preds = {k: predict(model, sp, b.device) for k, sp in (("dt", b.ds.test), ("df", sb.fs.forget))}
    rec = _record(name, sb.seed, m, {"probe_acc_dft": m["probe_acc_dft"], "seconds": seconds,
                                     "trainable_fraction": share, **extra})  # fmt: skip
    if name == "retrain":
        sb.oracle_rec, sb.oracle_preds = rec, preds
    o = sb.oracle_preds
    rec["act_dist_dt"] = activation_distance(preds["dt"], o["dt"]) if o else None
    rec["js_df"] = js_divergence(preds["df"], o["df"]) if o else None
    return rec
