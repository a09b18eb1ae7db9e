"""The benchmark's data and models: the bench splits, trained base models and Retrain oracles.

Oracles and trained base models are cached under the project's `.cache/bench` (never in
../shared), keyed by everything that makes them what they are: data, spec, recipe and seed.
"""

from __future__ import annotations

import fcntl
import io
import json
import logging
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from torch import nn

from components.canonical import canonical_json, sha256_hex
from components.data import Dataset, Split, dataset_hash, load_dataset
from components.files import write_atomic
from components.forget import forget_manifest, manifest_sha256
from components.models import build_model, load_model, make_spec, state_bytes
from components.runtime import resolve_device, set_seed
from components.settings import DataSettings, TrainSettings
from components.training import train_classifier
from components.unlearning.types import MethodConfig, UnlearnResult, UnlearnTask

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class BenchData:
    """D and three disjoint non-member splits, each with one use:

    - `ds.heldout`, the **reference**: RFA's target reads it (the sample target's non-member
      outputs) and nothing else does;
    - `validation`: every method's hyper-parameter choice, and the bench's MIA baseline and
      feature probe;
    - `ds.test`, the **report** split: the tables' Dt. No choice reads it.
    """

    ds: Dataset
    validation: Split


def stratified_parts(split: Split, parts: int, seed: int) -> list[Split]:
    """`split` divided into `parts` disjoint, class-stratified pieces of (nearly) equal size."""
    rng = np.random.default_rng(seed)
    owner = np.zeros(len(split), dtype=np.int64)
    for c in np.unique(split.y):
        idx = rng.permutation(np.flatnonzero(split.y == c))
        for k, chunk in enumerate(np.array_split(idx, parts)):
            owner[chunk] = k
    return [split.take(owner == k) for k in range(parts)]


def load_bench_data(name: str, data_dir: str | None, split_seed: int) -> BenchData:
    """digits: the pipeline's own heldout split is the reference and its test split is halved
    into validation and report. npz datasets: the model trains on the whole official train split
    (as the pre-trained checkpoints did), so the official test split is divided once, stratified,
    into reference, validation and report thirds."""
    if name == "digits":
        ds = load_dataset(DataSettings())
        validation, report = stratified_parts(ds.test, 2, split_seed)
        return BenchData(replace(ds, test=report), validation)
    ds = load_dataset(DataSettings(source="npz", root=data_dir, heldout_fraction=0.0))
    reference, validation, report = stratified_parts(ds.test, 3, split_seed)
    return BenchData(replace(ds, name=name, heldout=reference, test=report), validation)


def forget_ids(
    ds: Dataset, scenario: str, forget_class: int | None, fraction: float | None, seed: int
) -> set[str]:
    """Df's ids: the whole class, or `fraction` of D drawn with `seed`."""
    if scenario == "class":
        return set(ds.train.ids[ds.train.y == forget_class].tolist())
    rng = np.random.default_rng(seed)
    size = int(round(fraction * len(ds.train)))
    return set(rng.choice(ds.train.ids, size=size, replace=False).tolist())


def _is_cached(path: Path) -> bool:
    """The weights file is what marks a model cached (`_save_model` writes it last)."""
    return path.with_suffix(".safetensors").exists()


def _cached_model(path: Path, spec: dict) -> tuple[nn.Module | None, dict | None]:
    if _is_cached(path):
        meta = json.loads(path.with_suffix(".json").read_text())
        return load_model(spec, path.with_suffix(".safetensors").read_bytes()), meta
    return None, None


def _save_model(path: Path, model: nn.Module, meta: dict) -> None:
    """The metadata first, the weights last and through a temporary name: the weights file is
    what marks a model cached, so a killed run leaves no weights without their metadata."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.with_suffix(".json").write_text(json.dumps(meta, indent=1))
    write_atomic(path.with_suffix(".safetensors"), state_bytes(model))


@contextmanager
def only_one_trainer(path: Path, wait: bool = True) -> Iterator[bool]:
    """Held while a model is looked up and, if missing, trained: a second bench process that
    needs the same oracle (runs over different methods of one table) waits, then loads it.
    With `wait` False it does not wait: it yields False when another process holds the model."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".lock"), "w") as f:
        try:  # released when the file closes, or the process dies
            fcntl.flock(f, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            yield False
            return
        yield True


def train_key(cfg: TrainSettings) -> str:
    """Short hash of the whole training recipe but the seed (a key part of its own), so a changed
    schedule or precision never reuses an oracle trained under another one."""
    return sha256_hex(canonical_json(cfg.model_dump(exclude={"seed"})))[:8]


def oracle_key(
    dataset: str, arch: str, spec: dict, manifest_sha: str, seed: int, train: TrainSettings
) -> str:
    """Cache name of a Retrain oracle: data, architecture spec (a wider model is another oracle,
    not a shape error on load), forget manifest, seed and the training recipe."""
    spec_hash = sha256_hex(canonical_json(spec))[:8]
    recipe = f"e{train.epochs}-t{train_key(train)}"
    return f"{dataset}-{arch}-{manifest_sha[:16]}-s{seed}-{recipe}-m{spec_hash}"


def oracle_path(
    cache: Path, dataset: str, arch: str, spec: dict, forget: Split, seed: int,
    train: TrainSettings,
) -> Path:  # fmt: skip
    """Where the Retrain oracle of this forget set, seed and recipe is cached (`oracle`)."""
    manifest_sha = manifest_sha256(forget_manifest(forget))
    return cache / "oracles" / oracle_key(dataset, arch, spec, manifest_sha, seed, train)


def training_recipe(
    train: TrainSettings, epochs: int | None = None, precision: str | None = None
) -> TrainSettings:
    """`train` with the --oracle-epochs / --oracle-precision overrides (base model and Retrain
    share it). Validated, unlike model_copy, so a wrong value fails here, not deep in training."""
    overrides = {k: v for k, v in (("epochs", epochs), ("precision", precision)) if v is not None}
    return TrainSettings.model_validate({**train.model_dump(), **overrides})


def original_model(
    ds: Dataset,
    arch: str,
    checkpoint: str | None,
    cache: Path,
    train_cfg: TrainSettings,
    device: torch.device,
    width: int = 32,
) -> tuple[nn.Module, dict]:
    """(model, spec): the pre-trained checkpoint when one is given, else a base model trained
    here on the bench's training split (cached)."""
    if checkpoint is not None:
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
    recipe = {"data": dataset_hash(ds.train), "spec": spec, "train": train_cfg.model_dump()}
    path = cache / "base" / f"{ds.name}-{arch}-{sha256_hex(canonical_json(recipe))[:16]}"
    with only_one_trainer(path):
        model, _ = _cached_model(path, spec)
        if model is None:
            set_seed(train_cfg.seed)
            model = build_model(spec)
            info = train_classifier(model, ds.train, train_cfg, device)
            _save_model(path, model, {"seconds": info["seconds"]})
    return model.eval(), spec


Runner = Callable[[str, nn.Module, UnlearnTask, MethodConfig], tuple[UnlearnResult, float]]


@dataclass(frozen=True)
class EpochFile:
    """Retrain's state after its last finished epoch, in one file beside the oracle it becomes
    (components.training.Checkpoints): a bench killed mid-oracle resumes at that epoch."""

    path: Path

    def load(self) -> dict | None:
        if not self.path.exists():
            return None
        try:
            return torch.load(self.path, weights_only=True)
        except Exception as e:  # written atomically, so only a damaged disk gets here
            log.warning("%s unreadable (%s): Retrain starts over", self.path.name, e)
            return None

    def save(self, state: dict) -> None:
        buf = io.BytesIO()
        torch.save(state, buf)
        write_atomic(self.path, buf.getvalue())
        log.info("%s: epoch %d saved", self.path.stem, state["epoch"])  # an oracle's progress


def oracle(
    original: nn.Module, task: UnlearnTask, cfg: MethodConfig, spec: dict, path: Path,
    run: Runner,
) -> tuple[nn.Module, dict]:  # fmt: skip
    """The Retrain oracle for this forget set and seed, from the cache when it was trained before
    (then its seconds are those saved with it, not this run's), else trained here."""
    with only_one_trainer(path):
        model, meta = _cached_model(path, spec)
        if model is not None:
            return model, {"cpu_seconds": None, **meta, "oracle_cached": True}
        model, meta = _train_oracle(original, task, cfg, path, run)
    return model, {**meta, "oracle_cached": False}


def train_oracle_if_free(
    original: nn.Module, task: UnlearnTask, cfg: MethodConfig, spec: dict, path: Path,
    run: Runner,
) -> bool:  # fmt: skip
    """Train this oracle now unless it is cached or another process is training it (then return
    at once): processes sharing a table train different seeds' oracles side by side, instead of
    each waiting for the one the other trains. True when it was trained here."""
    with only_one_trainer(path, wait=False) as mine:
        if not mine or _is_cached(path):
            return False
        _train_oracle(original, task, cfg, path, run)
    return True


def _train_oracle(
    original: nn.Module, task: UnlearnTask, cfg: MethodConfig, path: Path, run: Runner
) -> tuple[nn.Module, dict]:
    """Retrain, saving every epoch beside the oracle (a killed run's successor continues it); the
    epochs file goes once the oracle is saved."""
    epochs = EpochFile(path.with_suffix(".epochs"))
    resumed = epochs.path.exists()
    res, cpu = run("retrain", original, task, replace(cfg, checkpoints=epochs))
    # The load when it ended: whether its seconds also measured other processes (report.py).
    # A resumed oracle's wall seconds add up its runs; this process saw only its own CPU time.
    # Its device too: seconds on a GPU are no measure of a CPU's methods (harness._method_record).
    meta = {"seconds": res.seconds, "cpu_seconds": None if resumed else cpu,
            "measured_at": time.time(), "load_1m": os.getloadavg()[0], "resumed": resumed,
            "device": resolve_device(cfg.baseline.device).type}  # fmt: skip
    _save_model(path, res.model, meta)
    epochs.path.unlink(missing_ok=True)
    log.info("%s: oracle trained in %.0f s%s", path.name, res.seconds,
             " (resumed)" if resumed else "")  # fmt: skip
    return res.model, meta
