"""Datasets behind one interface, with a stable id and a content hash for every sample.

Sources (registry `SOURCES`): `digits` (ships with scikit-learn; the embedded default), `npz`
(arrays `x`, `y` as in ../shared/datasets), and torchvision `fashion_mnist` / `cifar10` read
from a local root (a download happens only when `data.download` is true).

All images are stored as uint8 NCHW; labels as int64; ids as strings. Three disjoint splits:
`train` (D, what the model learns from), `heldout` (non-member reference, never trained on and
never used by a gate) and `test` (Dt, what the gates measure).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import numpy as np

from components.settings import DataSettings


class DataError(ValueError):
    """The dataset cannot be read or a split is inconsistent."""


@dataclass(frozen=True)
class Split:
    """One split: images (N, C, H, W) uint8, labels (N,) int64, ids (N,) str."""

    x: np.ndarray
    y: np.ndarray
    ids: np.ndarray

    def __post_init__(self) -> None:
        if not (len(self.x) == len(self.y) == len(self.ids)):
            raise DataError(f"split arrays differ in length: {len(self.x)}, {len(self.y)}, {len(self.ids)}")
        if self.x.dtype != np.uint8 or self.x.ndim != 4:
            raise DataError(f"images must be uint8 NCHW, got {self.x.dtype} {self.x.shape}")

    def __len__(self) -> int:
        return len(self.y)

    def take(self, mask_or_index: np.ndarray) -> "Split":
        return Split(self.x[mask_or_index], self.y[mask_or_index], self.ids[mask_or_index])

    def index_of(self) -> dict[str, int]:
        return {str(s): i for i, s in enumerate(self.ids)}


@dataclass(frozen=True)
class Dataset:
    name: str
    train: Split
    heldout: Split
    test: Split
    num_classes: int

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return tuple(self.train.x.shape[1:])  # type: ignore[return-value]


def sample_hash(x: np.ndarray, y: int) -> str:
    """sha256 of one sample's pixels (shape, dtype and bytes) and its label."""
    h = hashlib.sha256()
    h.update(f"{x.shape}|{x.dtype}|".encode())
    h.update(np.ascontiguousarray(x).tobytes())
    h.update(f"|{int(y)}".encode())
    return h.hexdigest()


def split_hashes(split: Split) -> list[str]:
    return [sample_hash(split.x[i], int(split.y[i])) for i in range(len(split))]


def dataset_hash(split: Split) -> str:
    """Order-independent hash of a split: sha256 over its sorted (id, sample hash) lines."""
    lines = sorted(f"{i}:{h}" for i, h in zip(split.ids.tolist(), split_hashes(split)))
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


def _to_nchw(x: np.ndarray) -> np.ndarray:
    if x.ndim == 3:  # N, H, W (grayscale)
        return x[:, None, :, :]
    if x.ndim == 4 and x.shape[-1] in (1, 3) and x.shape[1] not in (1, 3):  # NHWC
        return np.ascontiguousarray(x.transpose(0, 3, 1, 2))
    if x.ndim == 4:
        return x
    raise DataError(f"cannot read images of shape {x.shape}")


def _carve(x: np.ndarray, y: np.ndarray, ids: np.ndarray, fraction: float, seed: int) -> tuple[Split, Split]:
    """Seeded, class-stratified split of arrays into (rest, carved)."""
    rng = np.random.default_rng(seed)
    carved = np.zeros(len(y), dtype=bool)
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        k = int(round(fraction * len(idx)))
        carved[rng.choice(idx, size=k, replace=False)] = True
    rest = Split(x[~carved], y[~carved], ids[~carved])
    return rest, Split(x[carved], y[carved], ids[carved])


def _assemble(name: str, x_tr, y_tr, x_te, y_te, cfg: DataSettings, prefix: str) -> Dataset:
    x_tr = _to_nchw(np.asarray(x_tr)).astype(np.uint8)
    y_tr = np.asarray(y_tr).astype(np.int64)
    ids_tr = np.array([f"{prefix}train-{i:05d}" for i in range(len(y_tr))])
    if x_te is None:  # no official test split: carve one, stratified and seeded
        train_all, test = _carve(x_tr, y_tr, ids_tr, cfg.test_fraction, cfg.seed)
        x_tr, y_tr, ids_tr = train_all.x, train_all.y, train_all.ids
    else:
        x_te = _to_nchw(np.asarray(x_te)).astype(np.uint8)
        y_te = np.asarray(y_te).astype(np.int64)
        test = Split(x_te, y_te, np.array([f"{prefix}test-{i:05d}" for i in range(len(y_te))]))
    # Fraction of the original train set, so the share is the same with or without a test carve.
    frac = cfg.heldout_fraction / max(1e-9, 1 - (cfg.test_fraction if x_te is None else 0))
    train, heldout = _carve(x_tr, y_tr, ids_tr, frac, cfg.seed + 1)
    num_classes = int(max(train.y.max(), test.y.max())) + 1
    return Dataset(name=name, train=train, heldout=heldout, test=test, num_classes=num_classes)


def _digits(cfg: DataSettings) -> Dataset:
    from sklearn.datasets import load_digits

    d = load_digits()
    # Pixels are integers 0..16; x15 keeps them exact in uint8 (0..240).
    x = (d.images * 15).astype(np.uint8)
    ds = _assemble("digits", x, d.target, None, None, cfg, prefix="d")
    return ds


def _npz(cfg: DataSettings) -> Dataset:
    if not cfg.root:
        raise DataError("data.root must name a folder with train.npz (or train.part*.npz) and test.npz")
    root = Path(cfg.root)
    parts = sorted(root.glob("train.part*.npz")) or ([root / "train.npz"] if (root / "train.npz").exists() else [])
    if not parts:
        raise DataError(f"{root}: no train.npz or train.part*.npz")
    loaded = [np.load(p, allow_pickle=False) for p in parts]
    x = np.concatenate([p["x"] for p in loaded])
    y = np.concatenate([p["y"] for p in loaded])
    test = root / "test.npz"
    x_te = y_te = None
    if test.exists():
        t = np.load(test, allow_pickle=False)
        x_te, y_te = t["x"], t["y"]
    return _assemble(root.name, x, y, x_te, y_te, cfg, prefix="")


def _torchvision(cls_name: str) -> Callable[[DataSettings], Dataset]:
    def load(cfg: DataSettings) -> Dataset:
        import torchvision

        if not cfg.root:
            raise DataError(f"data.root must name the local {cls_name} folder")
        cls = getattr(torchvision.datasets, cls_name)
        try:
            tr = cls(cfg.root, train=True, download=cfg.download)
            te = cls(cfg.root, train=False, download=cfg.download)
        except RuntimeError as err:  # torchvision says "Dataset not found..."
            raise DataError(f"{cls_name} not found under {cfg.root} (set data.download: true to fetch it): {err}") from None
        to_np = lambda a: a.numpy() if hasattr(a, "numpy") else np.asarray(a)  # noqa: E731
        return _assemble(cls_name.lower(), to_np(tr.data), to_np(tr.targets), to_np(te.data), to_np(te.targets), cfg, prefix="")

    return load


SOURCES: dict[str, Callable[[DataSettings], Dataset]] = {
    "digits": _digits,
    "npz": _npz,
    "fashion_mnist": _torchvision("FashionMNIST"),
    "cifar10": _torchvision("CIFAR10"),
}


def load_dataset(cfg: DataSettings) -> Dataset:
    """Load the configured source into train / heldout / test splits with stable ids."""
    try:
        loader = SOURCES[cfg.source]
    except KeyError:
        raise DataError(f"unknown data.source {cfg.source!r}; choose one of {sorted(SOURCES)}") from None
    return loader(cfg)


def save_split(split: Split, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, x=split.x, y=split.y, ids=split.ids.astype(str))


def load_split(path_or_file) -> Split:
    d = np.load(path_or_file, allow_pickle=False)
    return Split(d["x"], d["y"].astype(np.int64), d["ids"].astype(str))
