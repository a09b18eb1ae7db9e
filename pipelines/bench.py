"""`unlearn bench`: RFA side by side with the baselines on one dataset / model / scenario.

Writes `results.json` (config + one record per method and seed, plus `original`) and
`results.md` (mean ± std, gaps to Retrain, time ratios to Retrain and FT from the same run).
Oracles and trained base models are cached under the project's `.cache/` (never in ../shared).
"""

from __future__ import annotations

import json
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from rich.console import Console
from rich.progress import Progress

from components.baselines import BaselineSettings
from components.canonical import canonical_json, sha256_hex
from components.data import Dataset, Split, dataset_hash, load_dataset
from components.evaluation import EvalSplits, evaluate
from components.forget import extract_forget_set, forget_manifest, manifest_sha256
from components.methods import MethodConfig, UnlearnTask, get_method
from components.metrics import predict
from components.models import (
    PROFILES,
    build_model,
    load_model,
    make_spec,
    model_digest,
    state_bytes,
)
from components.reference import activation_distance, feature_probe, js_divergence
from components.runtime import resolve_device, set_seed
from components.settings import DataSettings, EvaluationSettings, Settings, TrainSettings
from components.training import train_classifier
from pipelines.bench_report import avg_gap, render_markdown
from pipelines.provenance import package_versions

KEYS = ("acc_dr", "acc_df", "acc_dt", "acc_drt", "acc_dft", "mia_efficacy", "loss_mia_auc")
# Small learning-rate grids (method.md 2: unlearning is lr-sensitive); the chosen one is reported.
# Measured on digits: RL at lr 0.005 collapses the model (Dr 11 %) where 0.001 forgets cleanly;
# NegGrad+ needs more passes over a small Df to move at all. Two points each: on 2 CPU cores every
# grid point of a CIFAR-10 baseline costs minutes, and on digits (3 seeds x 2 scenarios) the third
# points (neggrad 0.05, rl / salun 0.005) were never the ones closest to Retrain.
GRIDS: dict[str, tuple[float, ...]] = {
    "ft": (0.01, 0.04),
    "neggrad": (0.005, 0.02),
    "rl": (0.0005, 0.001),
    "salun": (0.0005, 0.001),
    "scrub": (0.002, 0.01),
}
BASELINE_EPOCHS = {"ft": 1, "neggrad": 5, "rl": 2, "salun": 2, "scrub": 3}
CHECKPOINTS = {"resnet20": "resnet20-12fca82f.th", "resnet32": "resnet32-d509ac18.th"}


def load_bench_data(name: str, data_dir: str | None) -> Dataset:
    """digits: the pipeline's own splits. npz datasets: the model trains on the whole official
    train split (as the pre-trained checkpoints did), so the non-member `heldout` reference is
    half of the official test split, stratified, and the other half is Dt."""
    if name == "digits":
        return load_dataset(DataSettings())
    ds = load_dataset(DataSettings(source="npz", root=data_dir, heldout_fraction=0.0))
    rng = np.random.default_rng(12345)
    held = np.zeros(len(ds.test), dtype=bool)
    for c in np.unique(ds.test.y):
        idx = np.flatnonzero(ds.test.y == c)
        held[rng.choice(idx, size=len(idx) // 2, replace=False)] = True
    return replace(ds, name=name, heldout=ds.test.take(held), test=ds.test.take(~held))


def _cached_model(path: Path, spec: dict):
    if path.with_suffix(".safetensors").exists():
        meta = json.loads(path.with_suffix(".json").read_text())
        return load_model(spec, path.with_suffix(".safetensors").read_bytes()), meta
    return None, None


def _save_model(path: Path, model, meta: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.with_suffix(".safetensors").write_bytes(state_bytes(model))
    path.with_suffix(".json").write_text(json.dumps(meta, indent=1))


def train_key(cfg: TrainSettings) -> str:
    """Short hash of the training recipe (seed excluded: it is part of the key on its own), so a
    changed schedule never reuses an oracle trained under another one. fp32 (the default) stays out
    of the hash, so oracles cached before the precision setting existed keep their keys."""
    skip = {"seed"} | ({"precision"} if cfg.precision == "fp32" else set())
    return sha256_hex(canonical_json(cfg.model_dump(exclude=skip)))[:8]


def oracle_key(
    dataset: str, arch: str, spec: dict, manifest_sha: str, seed: int, train: TrainSettings
) -> str:
    """Cache name of a Retrain oracle: data, architecture spec (a wider model is another oracle, not
    a shape error on load), forget manifest, seed and the training recipe."""
    spec_hash = sha256_hex(canonical_json(spec))[:8]
    return f"{dataset}-{arch}-{manifest_sha[:16]}-s{seed}-e{train.epochs}-t{train_key(train)}-m{spec_hash}"


def training_recipe(
    train: TrainSettings, epochs: int | None = None, precision: str | None = None
) -> TrainSettings:
    """`train` with the --oracle-epochs / --oracle-precision overrides (base model and Retrain share
    it). Validated, unlike model_copy, so a wrong value fails here rather than deep in training."""
    overrides = {k: v for k, v in (("epochs", epochs), ("precision", precision)) if v is not None}
    return TrainSettings.model_validate({**train.model_dump(), **overrides})


def original_model(
    ds: Dataset,
    arch: str,
    checkpoint: str | None,
    cache: Path,
    train_cfg: TrainSettings,
    device,
    width: int = 32,
):
    if arch in CHECKPOINTS:
        from components.checkpoints import load_akamaster

        model = load_akamaster(checkpoint, arch)
        spec = {
            "arch": arch,
            "num_classes": 10,
            "mean": model.norm.mean.flatten().tolist(),
            "std": model.norm.std.flatten().tolist(),
        }
        return model, spec
    spec = make_spec(arch, ds.train.x, ds.num_classes, width)
    key = sha256_hex(
        canonical_json(
            {"data": dataset_hash(ds.train), "spec": spec, "train": train_cfg.model_dump()}
        )
    )[:16]
    model, _ = _cached_model(cache / "base" / f"{ds.name}-{arch}-{key}", spec)
    if model is None:
        set_seed(train_cfg.seed)
        model = build_model(spec)
        info = train_classifier(model, ds.train, train_cfg, device)
        _save_model(cache / "base" / f"{ds.name}-{arch}-{key}", model, {"seconds": info["seconds"]})
    return model.eval(), spec


def forget_ids(
    ds: Dataset, scenario: str, forget_class: int | None, fraction: float | None, seed: int
) -> set[str]:
    if scenario == "class":
        return set(ds.train.ids[ds.train.y == forget_class].tolist())
    rng = np.random.default_rng(seed)
    return set(
        rng.choice(ds.train.ids, size=int(round(fraction * len(ds.train))), replace=False).tolist()
    )


@torch.no_grad()
def _finite(model, split: Split, device) -> bool:
    """A diverged baseline (NaN / inf outputs) is reported as such, not scored."""
    from components.models import to_input

    return bool(torch.isfinite(model.to(device).eval()(to_input(split.x[:256]).to(device))).all())


def _record(method: str, seed: int, m: dict, extra: dict) -> dict:
    return {"method": method, "seed": seed, **{k: m.get(k) for k in KEYS}, **extra}


def _run_timed(name: str, original, task, cfg: MethodConfig):
    """Run a method; also return the CPU seconds it used (all threads of this process).

    Wall seconds on a shared machine grow with whatever else runs; CPU seconds do not, so ratios
    of them compare methods fairly when the load changed between (or during) their runs. On CUDA
    they count host work only: there the wall seconds are the measure."""
    c0 = time.process_time()
    res = get_method(name)(original, task, cfg)
    return res, time.process_time() - c0


def _oracle(original, task, cfg: MethodConfig, spec: dict, cache: Path, key: str):
    """The Retrain oracle for this forget set and seed, from the cache when it was trained before.
    Oracles cached before CPU seconds were recorded carry none (their ratios show as missing)."""
    model, meta = _cached_model(cache / "oracles" / key, spec)
    if model is not None:
        return model, {"cpu_seconds": None, **meta, "oracle_cached": True}
    res, cpu = _run_timed("retrain", original, task, cfg)
    meta = {"seconds": res.seconds, "cpu_seconds": cpu, "measured_at": time.time()}
    _save_model(cache / "oracles" / key, res.model, meta)
    return res.model, {**meta, "oracle_cached": False}


def _best_of_grid(
    name: str, original, task, cfg: MethodConfig, measure, oracle_rec: dict | None, is_finite, log
):
    """Run a method over its lr grid; keep the setting closest to Retrain (the first one without
    an oracle). Diverged settings are skipped; None if all diverged."""
    best = None
    for lr in GRIDS.get(name, (None,)):
        c = (
            cfg
            if lr is None
            else replace(cfg, baseline=replace(cfg.baseline, lr=lr, epochs=BASELINE_EPOCHS[name]))
        )
        res, cpu = _run_timed(name, original, task, c)
        if not is_finite(res.model):
            log(f"{name} diverged at lr={lr}; skipped")
            continue
        m = measure(res.model)
        gap = avg_gap(_record(name, 0, m, {}), oracle_rec) if oracle_rec is not None else 0.0
        if best is None or gap < best[0]:
            best = (gap, res, m, lr, cpu)
    return None if best is None else best[1:]


def write_results(out: Path, config: dict, records: list[dict]) -> dict:
    result = {"config": config, "records": records}
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(result, indent=1) + "\n")
    (out / "results.md").write_text(render_markdown(result))
    return result


def run_bench(
    dataset: str,
    data_dir: str | None,
    arch: str,
    checkpoint: str | None,
    scenario: str,
    forget_class: int | None,
    fraction: float | None,
    seeds: list[int],
    methods: list[str],
    out: Path,
    cache: Path,
    settings: Settings,
    console: Console,
    oracle_epochs: int | None = None,
    oracle_precision: str | None = None,
) -> dict:
    device = resolve_device(settings.rfa.device)
    # peft imports transformers (~8 s on this CPU): a once-per-process cost like torch's own import,
    # which no method's seconds should carry (it used to land on whichever seed ran RFA first).
    import peft  # noqa: F401

    ds = load_bench_data(dataset, data_dir)
    train_cfg = training_recipe(settings.train, oracle_epochs, oracle_precision)
    original, spec = original_model(
        ds, arch, checkpoint, cache, train_cfg, device, settings.model.width
    )
    profile = PROFILES[arch]
    lora = settings.lora.model_copy(update={"target_modules": profile.lora_targets})
    rfa_cfg = settings.rfa.model_copy(update={"taps": profile.taps})
    ev_cfg = EvaluationSettings(retain_eval_max=5000)
    records: list[dict] = []
    chosen: dict[str, float] = {}
    ordered = (["retrain"] if "retrain" in methods else []) + [m for m in methods if m != "retrain"]
    config = {
        "dataset": dataset,
        "model": arch,
        "scenario": scenario,
        "forget_class": forget_class,
        "fraction": fraction,
        "seeds": seeds,
        "methods": methods,
        "device": str(device),
        "torch_threads": torch.get_num_threads(),
        "packages": package_versions(),
        "original_digest": model_digest(original),
        "lr_chosen": chosen,
        "rfa": rfa_cfg.model_dump(mode="json"),
        "lora": lora.model_dump(mode="json"),
        "oracle_train": train_cfg.model_dump(mode="json"),
    }
    with Progress(console=console, transient=False) as bar:
        job = bar.add_task("bench", total=len(seeds) * (len(methods) + 1))
        for seed in seeds:
            fs = extract_forget_set(
                ds.train, forget_ids(ds, scenario, forget_class, fraction, seed), max_fraction=0.5
            )
            classes = (forget_class,) if scenario == "class" else ()
            task = UnlearnTask(scenario, fs.forget, fs.retain, ds.heldout, classes)
            splits = EvalSplits.build(fs.forget, fs.retain, ds.test, ds.heldout, classes, ev_cfg)
            forgotten_test = (
                ds.test.take(np.isin(ds.test.y, np.array(classes))) if classes else None
            )

            def measure(model) -> dict:
                m = evaluate(model, splits, ev_cfg, device)
                m["probe_acc_dft"] = (
                    feature_probe(
                        model, ds.heldout, forgotten_test, profile.penultimate, device, seed
                    )
                    if forgotten_test is not None
                    else None
                )
                return m

            cfg = MethodConfig(
                lora=lora,
                rfa=rfa_cfg.model_copy(update={"seed": seed}),
                baseline=BaselineSettings(seed=seed, device=settings.rfa.device),
                train=train_cfg.model_copy(update={"seed": seed}),
            )
            m0 = measure(original)
            records.append(
                _record(
                    "original",
                    seed,
                    m0,
                    {
                        "probe_acc_dft": m0["probe_acc_dft"],
                        "seconds": 0.0,
                        "cpu_seconds": 0.0,
                        "trainable_fraction": 0.0,
                        "act_dist_dt": None,
                        "js_df": None,
                    },
                )
            )
            bar.advance(job)
            oracle_rec = oracle_preds = None
            for name in ordered:
                bar.update(job, description=f"seed {seed}: {name}")
                if name == "retrain":
                    key = oracle_key(
                        ds.name,
                        arch,
                        spec,
                        manifest_sha256(forget_manifest(fs.forget)),
                        seed,
                        train_cfg,
                    )
                    model, meta = _oracle(original, task, cfg, spec, cache, key)
                    m, seconds, share = measure(model), meta["seconds"], 1.0
                    extra = {
                        "cpu_seconds": meta["cpu_seconds"],
                        "oracle_cached": meta["oracle_cached"],
                    }
                else:
                    found = _best_of_grid(
                        name,
                        original,
                        task,
                        cfg,
                        measure,
                        oracle_rec,
                        lambda mdl: _finite(mdl, ds.test, device),
                        lambda msg: console.print(f"seed {seed}: {msg}"),
                    )
                    if found is None:
                        records.append(
                            {
                                "method": name,
                                "seed": seed,
                                "diverged": True,
                                **{k: None for k in KEYS},
                                "probe_acc_dft": None,
                                "seconds": None,
                                "cpu_seconds": None,
                                "trainable_fraction": None,
                                "act_dist_dt": None,
                                "js_df": None,
                            }
                        )
                        bar.advance(job)
                        continue
                    res, m, lr, cpu = found
                    model, seconds, share, extra = (
                        res.model,
                        res.seconds,
                        res.trainable_fraction,
                        {
                            "cpu_seconds": cpu,
                            "lr": lr,
                            "steps": res.steps,
                            "stop_reason": res.stop_reason,
                        },
                    )
                    if lr is not None:
                        chosen[f"{name}@seed{seed}"] = lr
                preds = {
                    k: predict(model, sp, device) for k, sp in (("dt", ds.test), ("df", fs.forget))
                }
                rec = _record(
                    name,
                    seed,
                    m,
                    {
                        "probe_acc_dft": m["probe_acc_dft"],
                        "seconds": seconds,
                        "trainable_fraction": share,
                        **extra,
                    },
                )
                if name == "retrain":
                    oracle_rec, oracle_preds = rec, preds
                rec["act_dist_dt"] = (
                    activation_distance(preds["dt"], oracle_preds["dt"]) if oracle_preds else None
                )
                rec["js_df"] = (
                    js_divergence(preds["df"], oracle_preds["df"]) if oracle_preds else None
                )
                records.append(rec)
                write_results(out, config, records)  # a run stopped later keeps what it measured
                bar.advance(job)
    return write_results(out, config, records)
