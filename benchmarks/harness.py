"""`unlearn bench`: RFA side by side with the baselines on one dataset / model / scenario.

Writes `results.json` (config + one record per method and seed, plus `original`) and
`results.md` (mean ± std, gaps to Retrain, time ratios to Retrain and FT from the same run).
What runs is a `BenchRun` (the command line) and a params file's settings; RFA uses the file's
`lora` and `rfa` sections as written, the baselines its `bench` section.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.progress import Progress, TaskID
from torch import nn

from benchmarks.bench_run import BenchRun
from benchmarks.cache import (
    forget_ids,
    load_bench_data,
    oracle,
    oracle_path,
    original_model,
    train_oracle_if_free,
    training_recipe,
)
from benchmarks.live import steps_line
from benchmarks.points import Points, code_digest, own_settings
from benchmarks.report import save_results
from benchmarks.selection import choose, with_point
from benchmarks.shadows import Shadows, concat, train_shadows
from components.checkpoints import check_layers
from components.data import Dataset, Split, dataset_hash
from components.evaluation import EvalSplits, evaluate
from components.forget import ForgetSplit, extract_forget_set
from components.metrics import predict
from components.models import ModelError, build_model, make_spec, model_digest, to_input
from components.reference import activation_distance, feature_probes, js_divergence
from components.runtime import ProgressFn, no_progress, precision_policy, resolve_device
from components.settings import Settings
from components.unlearning.registry import get_method
from components.unlearning.types import MethodConfig, UnlearnResult, UnlearnTask
from pipelines.provenance import package_versions

KEYS = ("acc_dr", "acc_df", "acc_dt", "acc_drt", "acc_dft", "mia_efficacy", "loss_mia_auc",
        "lira_auc", "lira_tpr")  # fmt: skip
# The forgotten class read from the features: the linear probe RFA's adversary resembles, and
# probes it is not trained against (class scenario; None otherwise).
PROBES = ("probe_acc_dft", "knn_acc_dft", "mlp_acc_dft", "early_probe_acc_dft")
EMPTY = {**dict.fromkeys(PROBES), "seconds": None, "cpu_seconds": None, "trainable_fraction": None,
         "act_dist_dt": None, "js_df": None}  # fmt: skip


def run_timed(name: str, original: nn.Module, task: UnlearnTask, cfg: MethodConfig,
              progress: ProgressFn = no_progress) -> tuple[UnlearnResult, float]:  # fmt: skip
    """Run a method; also return the CPU seconds it used (all threads of this process).

    Wall seconds on a shared machine grow with whatever else runs; CPU seconds do not, so ratios
    of them compare methods fairly when the load changed between (or during) their runs. On CUDA
    they count host work only: there the wall seconds are the measure."""
    c0 = time.process_time()
    res = get_method(name)(original, task, cfg, progress)
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


@dataclass
class Bench:
    """The run's fixed parts: data, the original model, settings, device and output."""

    run: BenchRun
    settings: Settings
    ds: Dataset  # heldout: the reference (RFA's target only); test: the report split
    validation: Split  # every choice, the MIA baseline and the probe's training data
    original: nn.Module
    spec: dict
    device: torch.device
    cache: Path
    console: Console
    config: dict
    records: list[dict]
    progress: ProgressFn = no_progress  # a method's steps, to the live bar
    shadows: Shadows | None = None  # LiRA's, when --lira-shadows asks for them
    points: Points | None = None  # finished points of this configuration (benchmarks/points.py)
    # Oracles `_oracles_first` trained in this run: their records say so, though the seed loop
    # then reads them back from the cache.
    trained_oracles: set[Path] = field(default_factory=set)


def run_bench(
    run: BenchRun, settings: Settings, cache: Path, console: Console,
    label: Callable[[dict], dict] = lambda result: result,
) -> dict:  # fmt: skip
    """Choose every method's grid point on the tuning seed and the validation split, then run
    every method once per reported seed at that point, scored on the report split; results.json
    / results.md (stamped by `label`) are written after each method. Points an earlier run of
    this configuration finished (stopped, killed, or over other methods) are read back."""
    bench = setup_bench(run, settings, cache, console)
    tuned = [m for m in run.ordered_methods() if m in settings.bench.grids]

    def save() -> dict:
        return save_results(run.out, label({"config": bench.config, "records": bench.records}))

    with Progress(console=console, transient=False) as bar:
        job = bar.add_task("bench", total=len(tuned) + len(run.seeds) * (len(run.methods) + 1))
        bench.progress = steps_line(bar)
        if "retrain" in run.methods:
            bar.update(job, description="Retrain oracles")
            _oracles_first(bench)
        bench.config["tuning"] = _tune(bench, tuned, bar, job)
        if run.lira_shadows:
            bar.update(job, description="LiRA shadows")
            bench.shadows = _shadows(bench)
        for seed in run.seeds:
            sb = seed_bench(bench, seed, bench.ds.test)
            m0 = sb.measure(bench.original)
            extra = {**EMPTY, **{k: m0[k] for k in PROBES}, "seconds": 0.0,
                     "cpu_seconds": 0.0, "trainable_fraction": 0.0}  # fmt: skip
            bench.records.append(_record("original", seed, m0, extra))
            bar.advance(job)
            for name in run.ordered_methods():
                bar.update(job, description=f"seed {seed}: {name}")
                bench.records.append(_resumed_record(bench, sb, name))
                save()  # a stopped run keeps these
                bar.advance(job)
    return save()


def train_oracles(run: BenchRun, settings: Settings, cache: Path, console: Console) -> dict:
    """`--oracles-only`: each seed's Retrain oracle, trained where not cached; {seed: its path}."""
    b = setup_bench(run, settings, cache, console)
    benches = _oracles_first(b)
    for sb in benches:
        _oracle(b, sb)  # waits for one that another process was training
    return {sb.seed: _oracle_path(b, sb) for sb in benches}


def _oracles_first(b: Bench) -> list[SeedBench]:
    """Every seed's Retrain before any method, each one no other process is already training:
    `run.sh`'s processes over one table train different seeds' oracles side by side (a CIFAR-10
    oracle is about an hour) instead of each waiting behind the one the other trains. Returns
    each seed's bench (on the validation split)."""
    benches = [seed_bench(b, s, b.validation, probe=False) for s in (b.run.tune_seed, *b.run.seeds)]
    for sb in benches:
        path = _oracle_path(b, sb)
        if train_oracle_if_free(b.original, sb.task, sb.cfg, b.spec, path, run_timed):
            b.trained_oracles.add(path)
    return benches


def _tune(b: Bench, methods: list[str], bar: Progress, job: TaskID) -> dict:
    """Each method's grid on the tuning seed's forget set, scored on the validation split
    against that seed's Retrain (trained or loaded first). The report split is never read."""
    sb = seed_bench(b, b.run.tune_seed, b.validation, probe=False)
    oracle_rec = None
    if "retrain" in b.run.methods:
        model, _ = _oracle(b, sb)
        oracle_rec = sb.measure(model)
    out: dict = {"seed": b.run.tune_seed, "split": "validation", "methods": {}}
    for name in methods:
        bar.update(job, description=f"tuning {name} on seed {b.run.tune_seed}")
        grid = b.settings.bench.grids[name]
        out["methods"][name] = choose(grid, _tuning_point(b, sb, name), oracle_rec)
        b.config["lr_chosen"][name] = out["methods"][name]["lr"]
        bar.advance(job)
    return out


def _tuning_point(b: Bench, sb: SeedBench, name: str) -> Callable[[float], dict | None]:
    """Run and measure `name` at one grid point on the tuning task (None: it diverged), or read
    the measurement back where this configuration's points hold it."""

    def score(lr: float) -> dict | None:
        key = f"tune-{name}-{own_settings(b.config, name)}-lr{lr!r}"
        hit = _reuse(b, key)
        if hit is not None:
            return hit["m"]
        cfg = with_point(name, sb.cfg, b.settings, sb.task.scenario, lr)
        res, _ = run_timed(name, b.original, sb.task, cfg, b.progress)
        m = sb.measure(res.model) if _finite(res.model, b.validation, b.device) else None
        b.points.put(key, {"m": m})
        return m

    return score


def _resumed_record(b: Bench, sb: SeedBench, name: str) -> dict:
    """`_method_record`, or the record a run of this configuration finished before. Retrain's
    is measured again from its cached oracle: the other records' distances need its outputs."""
    if name == "retrain":
        return _method_record(b, sb, name)
    tuned = b.config["tuning"]["methods"].get(name, {})
    own, vs = own_settings(b.config, name), "oracle" if sb.oracle_preds else "alone"
    key = f"s{sb.seed}-{name}-{own}-lr{tuned.get('lr')!r}-{vs}"
    hit = _reuse(b, key)
    if hit is not None:  # its grid may have grown since: where the choice sits is today's
        return hit | ({"lr_at_grid_edge": tuned.get("edge")} if "lr_at_grid_edge" in hit else {})
    rec = _method_record(b, sb, name)
    b.points.put(key, rec)
    return rec


def _reuse(b: Bench, key: str) -> dict | None:
    hit = b.points.get(key)
    if hit is not None:
        b.config["points"]["reused"] += 1  # Points.get says so, as Points.put says "finished"
    return hit


def setup_bench(run: BenchRun, settings: Settings, cache: Path, console: Console) -> Bench:
    device = resolve_device(settings.rfa.device)
    # Every method's precision (`rfa.precision`, resolved): a bf16 the CPU lacks fails here.
    methods_precision = precision_policy(device, settings.rfa.precision).precision
    # peft imports transformers (~8 s on this CPU): a once-per-process cost like torch's own
    # import, which no method's seconds should carry.
    import peft  # noqa: F401

    data = load_bench_data(run.dataset, _opt(run.data_dir), settings.bench.heldout_seed)
    ds = data.ds
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
        "seeds": run.seeds, "tune_seed": run.tune_seed, "methods": run.methods,
        "device": str(device), "precision": methods_precision,
        "splits": {"reference": len(ds.heldout),
        "validation": len(data.validation), "report": len(ds.test)},
        "torch_threads": torch.get_num_threads(), "packages": package_versions(),
        "original_digest": model_digest(original), "lr_chosen": {},
        "grids": {k: list(v) for k, v in settings.bench.grids.items()},
        "recipes": settings.bench.recipes,
        "rfa": settings.rfa.model_dump(mode="json"), "lora": settings.lora.model_dump(mode="json"),
        "oracle_train": train_cfg.model_dump(mode="json"),
        "bench": settings.bench.model_dump(mode="json", exclude={"grids", "recipes"}),
        **({"lira_shadows": run.lira_shadows} if run.lira_shadows else {}),
    }  # fmt: skip
    bench = Bench(
        run, settings, ds, data.validation, original, spec, device, cache, console, config, []
    )
    splits = {"train": ds.train, "reference": ds.heldout, "validation": data.validation,
              "report": ds.test}  # fmt: skip
    hashes = {k: dataset_hash(v) for k, v in splits.items()}
    bench.points = Points.for_run(cache, config, hashes, code_digest())
    config["points"] = {"folder": bench.points.folder.name, "reused": 0}
    return bench


def _shadows(b: Bench) -> Shadows:
    """LiRA's shadows (trained here where not cached), after tuning: no choice reads them, and a
    run that fails while tuning has not spent their hours."""
    pool = concat(b.ds.train, b.validation)  # Df's images and the negatives, each in and out
    train = b.settings.train  # the base model's recipe, --oracle-* overrides included
    return train_shadows(
        pool, b.spec, train, b.run.lira_shadows, b.cache, b.device, say=b.console.print
    )


def _check_layer_names(run: BenchRun, settings: Settings, ds: Dataset) -> None:
    """The params file's LoRA targets, taps and probe layer must name layers of the model: they
    are used as written, never replaced by an architecture's defaults. ModelError otherwise."""
    spec = make_spec(run.model, ds.train.x[:16], ds.num_classes, settings.model.width)
    arch = build_model(spec)  # the architecture only: its statistics and weights do not matter
    check_layers(arch, settings.lora.target_modules, tuple(settings.rfa.taps))
    names = dict(arch.named_modules())
    for key in ("probe_layer", "early_probe_layer"):
        layer = getattr(settings.bench, key)
        if layer is not None and layer not in names:
            raise ModelError(f"bench.{key} {layer!r} names no layer")


def _opt(p: Path | None) -> str | None:
    return str(p) if p is not None else None


def seed_bench(b: Bench, seed: int, dt: Split, probe: bool = True) -> SeedBench:
    """One seed's forget set and task, scored on `dt` (validation while tuning, else the report
    split). RFA's target reads the reference split (the task's heldout) and nothing else does:
    the feature probe's training data is the validation split; the attacks' non-member baseline
    is `dt` itself, cross-fitted."""
    run, ds, s = b.run, b.ds, b.settings
    forget_class = run.forget_class if run.scenario == "class" else None
    ids = forget_ids(ds, run.scenario, forget_class, run.fraction, seed)
    fs = extract_forget_set(ds.train, ids, max_fraction=0.5)
    classes = (forget_class,) if forget_class is not None else ()
    task = UnlearnTask(run.scenario, fs.forget, fs.retain, ds.heldout, classes)
    splits = EvalSplits.build(fs.forget, fs.retain, dt, classes, s.bench.evaluation)
    forgotten_test = dt.take(np.isin(dt.y, np.array(classes))) if classes and probe else None

    def measure(model: nn.Module) -> dict:
        m = evaluate(model, splits, s.bench.evaluation, b.device)
        m.update(dict.fromkeys(PROBES))
        if b.shadows is not None and probe:  # reported seeds only: no choice reads it
            lira = b.shadows.attack(model, fs.forget, b.validation, b.device)
            m["lira_auc"], m["lira_tpr"] = lira["auc"], lira["tpr"]
        if forgotten_test is not None:
            layers = (s.bench.probe_layer, s.bench.early_probe_layer)
            m.update(feature_probes(model, b.validation, forgotten_test, *layers, b.device, seed))
        return m

    cfg = MethodConfig(
        lora=s.lora,
        rfa=s.rfa.model_copy(update={"seed": seed}),
        baseline=s.bench.baseline.model_copy(
            update={"seed": seed, "device": s.rfa.device, "precision": s.rfa.precision}
        ),  # every method on one device under one precision
        train=s.train.model_copy(update={"seed": seed}),
    )
    return SeedBench(seed, fs, task, cfg, measure)


def _oracle(b: Bench, sb: SeedBench) -> tuple[nn.Module, dict]:
    """This seed's Retrain, trained here or loaded from the cache."""
    path = _oracle_path(b, sb)
    model, meta = oracle(b.original, sb.task, sb.cfg, b.spec, path, run_timed)
    return model, meta | ({"oracle_cached": False} if path in b.trained_oracles else {})


def _oracle_path(b: Bench, sb: SeedBench) -> Path:
    return oracle_path(
        b.cache, b.ds.name, b.run.model, b.spec, sb.fs.forget, sb.seed, b.settings.train
    )


def _method_record(b: Bench, sb: SeedBench, name: str) -> dict:
    """Run (or load, for a cached oracle) one method on one seed at its chosen point, scored."""
    if name == "retrain":
        model, meta = _oracle(b, sb)
        # An oracle trained on another device (a GPU's, loaded here) has no seconds to compare.
        here = meta.get("device", "cpu") == b.device.type
        seconds, cpu = (meta["seconds"], meta["cpu_seconds"]) if here else (None, None)
        m, share = sb.measure(model), 1.0
        extra = {"cpu_seconds": cpu, "oracle_cached": meta["oracle_cached"],
                 "load_1m": meta.get("load_1m")}  # fmt: skip
        return _scored(b, sb, name, model, m, seconds, share, extra)
    tuned = b.config["tuning"]["methods"].get(name, {})
    if tuned.get("grid") and tuned["lr"] is None:  # every grid point diverged while tuning
        return {"method": name, "seed": sb.seed, "diverged": True,
                **dict.fromkeys(KEYS), **EMPTY}  # fmt: skip
    lr = tuned.get("lr")
    cfg = with_point(name, sb.cfg, b.settings, sb.task.scenario, lr)
    res, cpu = run_timed(name, b.original, sb.task, cfg, b.progress)
    if not _finite(res.model, b.ds.test, b.device):
        return {"method": name, "seed": sb.seed, "diverged": True,
                **dict.fromkeys(KEYS), **EMPTY}  # fmt: skip
    extra = {"cpu_seconds": cpu, "load_1m": os.getloadavg()[0], "lr": lr, "steps": res.steps,
             "stop_reason": res.stop_reason, "lr_at_grid_edge": tuned.get("edge")}  # fmt: skip
    m = sb.measure(res.model)
    return _scored(b, sb, name, res.model, m, res.seconds, res.trainable_fraction, extra)


def _scored(
    b: Bench, sb: SeedBench, name: str, model: nn.Module, m: dict, seconds: float | None,
    share: float, extra: dict,
) -> dict:  # fmt: skip
    """The method's record with the reference metrics against this seed's Retrain, if run."""
    preds = {k: predict(model, sp, b.device) for k, sp in (("dt", b.ds.test), ("df", sb.fs.forget))}
    rec = _record(name, sb.seed, m, {**{k: m[k] for k in PROBES}, "seconds": seconds,
                                     "trainable_fraction": share, **extra})  # fmt: skip
    if name == "retrain":
        sb.oracle_rec, sb.oracle_preds = rec, preds
    o = sb.oracle_preds
    rec["act_dist_dt"] = activation_distance(preds["dt"], o["dt"]) if o else None
    rec["js_df"] = js_divergence(preds["df"], o["df"]) if o else None
    return rec
