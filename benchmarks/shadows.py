"""LiRA's shadow models for the bench (components/lira.py): trained here like the base model, on
random halves of a pool of D and the validation split, each example inside exactly half of them.

Only each shadow's logit-scaled confidences on the pool are kept (cached under
`.cache/bench/shadows`, keyed by the pool, the spec, the recipe and the split of the pool): the
attack needs nothing else, and a Fashion-MNIST shadow is a 20-epoch training.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from benchmarks.cache import only_one_trainer
from components.canonical import canonical_json, sha256_hex
from components.data import Split, dataset_hash
from components.files import write_atomic
from components.lira import attack_summary, lira_scores, logit_confidence
from components.metrics import predict
from components.models import build_model
from components.runtime import set_seed
from components.settings import TrainSettings
from components.training import train_classifier


@dataclass(frozen=True)
class Shadows:
    """Pool ids, each shadow's phi on the pool (S, N) and which examples it trained on (S, N)."""

    index: dict[str, int]
    phi: np.ndarray
    inside: np.ndarray

    def attack(
        self, model: nn.Module, members: Split, nonmembers: Split, device: torch.device
    ) -> dict:
        """LiRA AUC and TPR at 1 % FPR of `members` (Df) over `nonmembers`, both in the pool."""
        scores = []
        for split in (members, nonmembers):
            cols = np.array([self.index[str(i)] for i in split.ids])
            phi = logit_confidence(predict(model, split, device).logits, split.y)
            scores.append(lira_scores(phi, self.phi[:, cols], self.inside[:, cols]))
        return attack_summary(*scores)


def halves(count: int, n: int, seed: int) -> np.ndarray:
    """(count, n) membership: every column inside exactly count // 2 shadows (the paper's
    balanced draw), so no example lacks an in-side or an out-side."""
    if count < 2 or count % 2:
        raise ValueError(f"LiRA needs an even number of shadows (>= 2), got {count}")
    keys = np.random.default_rng(seed).random((count, n))
    return keys.argsort(0).argsort(0) < count // 2


def shadow_plan(
    pool: Split, spec: dict, train: TrainSettings, count: int, cache: Path, seed: int = 0
) -> tuple[np.ndarray, list[Path]]:
    """Who trains on what, and where each shadow's statistics are cached: a shadow is the same
    file whichever process trains it (so separate processes can train a plan's shadows)."""
    inside = halves(count, len(pool), seed)
    recipe = {"pool": dataset_hash(pool), "spec": spec, "train": train.model_dump()}
    key = sha256_hex(canonical_json({**recipe, "inside": sha256_hex(inside.tobytes())}))[:16]
    return inside, [cache / "shadows" / f"{key}-{s}of{count}.npy" for s in range(count)]


def train_shadow(
    pool: Split, spec: dict, train: TrainSettings, inside: np.ndarray, s: int, path: Path,
    device: torch.device,
) -> None:  # fmt: skip
    """Shadow `s`: trained from its own seed on its half of the pool; its phi on the whole pool
    written to `path` (via a temporary name, so a killed run leaves no half-written file)."""
    shadow_train = train.model_copy(update={"seed": train.seed + 1000 + s})
    set_seed(shadow_train.seed)  # the initial weights differ per shadow, as its batches
    model = build_model(spec)
    train_classifier(model, pool.take(inside[s]), shadow_train, device)
    path.parent.mkdir(parents=True, exist_ok=True)
    scores = io.BytesIO()
    np.save(scores, logit_confidence(predict(model, pool, device).logits, pool.y))
    write_atomic(path, scores.getvalue())


def train_shadows(
    pool: Split,
    spec: dict,
    train: TrainSettings,
    count: int,
    cache: Path,
    device: torch.device,
    seed: int = 0,
    say: Callable[[str], None] = lambda _: None,
) -> Shadows:
    """The plan's shadows, trained where not cached. Processes sharing a table (`JOBS=2`) reach
    them together: each trains the shadows no other process holds, side by side like the oracles,
    then waits for and loads the ones another process was training, never training one twice."""
    inside, paths = shadow_plan(pool, spec, train, count, cache, seed)
    for wait in (False, True):
        for s, path in enumerate(paths):
            with only_one_trainer(path, wait=wait) as mine:
                if mine and not path.exists():
                    say(f"LiRA shadow {s + 1}/{count}: training on {int(inside[s].sum())} images")
                    train_shadow(pool, spec, train, inside, s, path, device)
    return Shadows(pool.index_of(), np.stack([np.load(p) for p in paths]), inside)


def concat(*splits: Split) -> Split:
    return Split(*(np.concatenate([getattr(s, f) for s in splits]) for f in ("x", "y", "ids")))
