"""Datasets behind one interface, with a stable id and a content hash for every sample.

Sources (registry `SOURCES`): `digits` (ships with scikit-learn; the embedded default), `npz`
(arrays `x`, `y` and optionally an id array, as in ../shared/datasets), `imagefolder` (a
class-per-folder directory of image files, ids = relative paths), and torchvision
`fashion_mnist` / `cifar10` read from a local root (a download happens only when
`data.download` is true).

All images are stored as uint8 NCHW; labels as int64; ids as strings. Three disjoint splits:
`train` (D, what the model learns from), `heldout` (non-member reference, never trained on and
never used by a gate) and `test` (Dt, what the gates measure).
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

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
            raise DataError(
                f"split arrays differ in length: {len(self.x)}, {len(self.y)}, {len(self.ids)}"
            )
        if self.x.dtype != np.uint8 or self.x.ndim != 4:
            raise DataError(f"images must be uint8 NCHW, got {self.x.dtype} {self.x.shape}")

    def __len__(self) -> int:
        return len(self.y)

    def take(self, mask_or_index: np.ndarray) -> Split:
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
    # Which files each split was taken from ("train-files" | "test-files"): a pre-trained model
    # declared to have seen every training file must meet no split carved from them.
    origins: tuple[tuple[str, str], ...] = (
        ("train", "train-files"),
        ("heldout", "train-files"),
        ("test", "test-files"),
    )
    class_names: tuple[str, ...] = ()

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
    lines = sorted(f"{i}:{h}" for i, h in zip(split.ids.tolist(), split_hashes(split), strict=True))
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()


def _to_nchw(x: np.ndarray) -> np.ndarray:
    if x.ndim == 3:  # N, H, W (grayscale)
        return x[:, None, :, :]
    if x.ndim == 4 and x.shape[-1] in (1, 3) and x.shape[1] not in (1, 3):  # NHWC
        return np.ascontiguousarray(x.transpose(0, 3, 1, 2))
    if x.ndim == 4:
        return x
    raise DataError(f"cannot read images of shape {x.shape}")


def _carve(
    x: np.ndarray, y: np.ndarray, ids: np.ndarray, fraction: float, seed: int
) -> tuple[Split, Split]:
    """Seeded, class-stratified split of arrays into (rest, carved)."""
    rng = np.random.default_rng(seed)
    carved = np.zeros(len(y), dtype=bool)
    for c in np.unique(y):
        idx = np.flatnonzero(y == c)
        k = int(round(fraction * len(idx)))
        carved[rng.choice(idx, size=k, replace=False)] = True
    rest = Split(x[~carved], y[~carved], ids[~carved])
    return rest, Split(x[carved], y[carved], ids[carved])


# A sample id becomes a file path in the snapshot (data/raw/<split>/<label>/<id>.npy): relative,
# no `..`, no characters a file system or a shell would trip on.
_ID = re.compile(r"^(?!/)(?!.*(^|/)\.\.?(/|$))[A-Za-z0-9._/+=-]{1,200}$")


def check_ids(ids: np.ndarray, where: str) -> np.ndarray:
    """Ids as a str array; DataError on a duplicate or on an id unusable as a relative path."""
    ids = np.asarray(ids).astype(str)
    bad = next((i for i in ids.tolist() if not _ID.match(i)), None)
    if bad is not None:
        raise DataError(
            f"{where}: sample id {bad!r} is not usable (letters, digits, . _ - + = and / only; no "
            "..)"
        )
    uniq, counts = np.unique(ids, return_counts=True)
    if (counts > 1).any():
        dup = uniq[counts > 1]
        raise DataError(
            f"{where}: duplicate sample id {str(dup[0])!r} ({len(dup)} ids occur more than once)"
        )
    return ids


def _labels(y: np.ndarray, where: str) -> np.ndarray:
    y = np.asarray(y)
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer) or (len(y) and y.min() < 0):
        raise DataError(f"{where}: labels must be non-negative integers, one per image")
    return y.astype(np.int64)


def _assemble(
    name: str,
    x_tr: np.ndarray,
    y_tr: np.ndarray,
    x_te: np.ndarray,
    y_te: np.ndarray,
    cfg: DataSettings,
    prefix: str,
    ids_tr: np.ndarray | None = None,
    ids_te: np.ndarray | None = None,
    class_names: tuple[str, ...] = (),
) -> Dataset:
    x_tr = _to_nchw(np.asarray(x_tr)).astype(np.uint8, copy=False)
    y_tr = _labels(y_tr, f"{name} train")
    ids_tr = check_ids(
        ids_tr if ids_tr is not None else [f"{prefix}train-{i:05d}" for i in range(len(y_tr))],
        f"{name} train",
    )
    origins = {"train": "train-files", "heldout": "train-files", "test": "test-files"}
    if x_te is None:  # no official test split: carve one, stratified and seeded
        if cfg.heldout_from == "test":
            raise DataError(
                f"{name} has no test split to carve the heldout reference from; set "
                "data.heldout_from: train"
            )
        train_all, test = _carve(x_tr, y_tr, ids_tr, cfg.test_fraction, cfg.seed)
        x_tr, y_tr, ids_tr = train_all.x, train_all.y, train_all.ids
        origins["test"] = "train-files"
    else:
        x_te = _to_nchw(np.asarray(x_te)).astype(np.uint8, copy=False)
        y_te = _labels(y_te, f"{name} test")
        ids_te = check_ids(
            ids_te if ids_te is not None else [f"{prefix}test-{i:05d}" for i in range(len(y_te))],
            f"{name} test",
        )
        if x_te.shape[1:] != x_tr.shape[1:]:
            raise DataError(
                f"{name}: test images are {x_te.shape[1:]}, train images {x_tr.shape[1:]} (C, H, W)"
            )
        test = Split(x_te, y_te, ids_te)
    if cfg.heldout_from == "test":
        # The test split is divided once: heldout (non-member reference) and Dt (what gates
        # measure).
        test, heldout = _carve(test.x, test.y, test.ids, cfg.heldout_fraction, cfg.seed + 1)
        train = Split(x_tr, y_tr, ids_tr)
        origins["heldout"] = origins["test"]
    else:
        # Fraction of the original train set, so the share is the same with or without a test carve.
        frac = cfg.heldout_fraction / max(1e-9, 1 - (cfg.test_fraction if x_te is None else 0))
        train, heldout = _carve(x_tr, y_tr, ids_tr, frac, cfg.seed + 1)
    num_classes = int(max(train.y.max(), test.y.max())) + 1
    return Dataset(
        name=name,
        train=train,
        heldout=heldout,
        test=test,
        num_classes=num_classes,
        origins=tuple(origins.items()),
        class_names=class_names,
    )


def _digits(cfg: DataSettings) -> Dataset:
    from sklearn.datasets import load_digits

    d = load_digits()
    # Pixels are integers 0..16; x15 keeps them exact in uint8 (0..240).
    x = (d.images * 15).astype(np.uint8)
    ds = _assemble("digits", x, d.target, None, None, cfg, prefix="d")
    return ds


def _npz(cfg: DataSettings) -> Dataset:
    if not cfg.root:
        raise DataError(
            "data.root must name a folder with train.npz (or train.part*.npz) and test.npz"
        )
    root = Path(cfg.root)
    parts = sorted(root.glob("train.part*.npz")) or (
        [root / "train.npz"] if (root / "train.npz").exists() else []
    )
    if not parts:
        raise DataError(f"{root}: no train.npz or train.part*.npz")
    try:
        loaded = [np.load(p, allow_pickle=False) for p in parts]
        x = np.concatenate([p["x"] for p in loaded])
        y = np.concatenate([p["y"] for p in loaded])
        ids = np.concatenate([p[cfg.id_key] for p in loaded]) if cfg.id_key else None
        test = root / "test.npz"
        x_te = y_te = ids_te = None
        if test.exists():
            t = np.load(test, allow_pickle=False)
            x_te, y_te = t["x"], t["y"]
            ids_te = t[cfg.id_key] if cfg.id_key else None
    except KeyError:
        need = ["x", "y"] + ([cfg.id_key] if cfg.id_key else [])
        raise DataError(
            f"{root}: every npz needs the arrays {need} (data.id_key names the id array)"
        ) from None
    except (OSError, ValueError) as err:
        raise DataError(f"{root}: unreadable npz ({err})") from None
    return _assemble(root.name, x, y, x_te, y_te, cfg, prefix="", ids_tr=ids, ids_te=ids_te)


IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm")


def read_image_folder(
    folder: Path, classes: tuple[str, ...] | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray, tuple[str, ...]]:
    """A class-per-folder directory (torchvision ImageFolder layout): `folder/<class>/<file>`.

    Labels are the sorted class folder names' indices (ImageFolder's rule); ids are the files'
    paths relative to `folder`. Every image must decode and share one size and mode: a file that
    does not is named in the DataError. Returns (x uint8 NCHW, y, ids, class names).
    """
    from PIL import Image, UnidentifiedImageError

    found = tuple(sorted(d.name for d in folder.iterdir() if d.is_dir())) if folder.is_dir() else ()
    classes = classes or found
    if not classes:
        raise DataError(f"{folder}: no class folders (expected {folder}/<class>/<image file>)")
    unknown = sorted(set(found) - set(classes))
    if unknown:
        raise DataError(
            f"{folder}: class folder {unknown[0]!r} is not among the training classes "
            f"{list(classes)}"
        )
    files = [
        (p, c)
        for c, name in enumerate(classes)
        for p in sorted((folder / name).rglob("*"))
        if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES
    ]
    if not files:
        raise DataError(f"{folder}: no image files under its class folders")
    arrays, shape = [], None
    for p, _ in files:
        try:
            with Image.open(p) as im:
                a = np.asarray(im.convert(im.mode if im.mode in ("L", "RGB") else "RGB"))
        except (UnidentifiedImageError, OSError, ValueError) as err:
            raise DataError(f"{p}: unreadable image ({type(err).__name__})") from None
        a = a[:, :, None] if a.ndim == 2 else a
        shape = shape or a.shape
        if a.shape != shape:
            raise DataError(
                f"{p}: image is {a.shape[1]}x{a.shape[0]}x{a.shape[2]}, the others "
                f"{shape[1]}x{shape[0]}x{shape[2]} "
                "(W x H x channels); resize them to one shape first"
            )
        arrays.append(a)
    x = np.ascontiguousarray(np.stack(arrays).transpose(0, 3, 1, 2))
    y = np.array([c for _, c in files], dtype=np.int64)
    ids = np.array([p.relative_to(folder).as_posix() for p, _ in files])
    return x, y, ids, classes


def _imagefolder(cfg: DataSettings) -> Dataset:
    """`root/<class>/...` (train only; a test split is carved), or `root/train/<class>/...` plus
    `root/test/<class>/...` (an official test split)."""
    if not cfg.root:
        raise DataError(
            "data.root must name a folder of class folders (root/<class>/<image>) or root/train + "
            "root/test"
        )
    root = Path(cfg.root)
    if not root.is_dir():
        raise DataError(f"{root}: no such folder")
    train_dir = root / "train" if (root / "train").is_dir() else root
    x, y, ids, classes = read_image_folder(train_dir)
    x_te = y_te = ids_te = None
    if train_dir != root and (root / "test").is_dir():
        x_te, y_te, ids_te, _ = read_image_folder(root / "test", classes)
    return _assemble(
        root.name, x, y, x_te, y_te, cfg, prefix="", ids_tr=ids, ids_te=ids_te, class_names=classes
    )


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
            raise DataError(
                f"{cls_name} not found under {cfg.root} (set data.download: true to fetch it): "
                f"{err}"
            ) from None
        to_np = lambda a: a.numpy() if hasattr(a, "numpy") else np.asarray(a)  # noqa: E731
        return _assemble(
            cls_name.lower(),
            to_np(tr.data),
            to_np(tr.targets),
            to_np(te.data),
            to_np(te.targets),
            cfg,
            prefix="",
        )

    return load


SOURCES: dict[str, Callable[[DataSettings], Dataset]] = {
    "digits": _digits,
    "npz": _npz,
    "imagefolder": _imagefolder,
    "fashion_mnist": _torchvision("FashionMNIST"),
    "cifar10": _torchvision("CIFAR10"),
}


def load_dataset(cfg: DataSettings) -> Dataset:
    """Load the configured source into train / heldout / test splits with stable ids."""
    try:
        loader = SOURCES[cfg.source]
    except KeyError:
        raise DataError(
            f"unknown data.source {cfg.source!r}; choose one of {sorted(SOURCES)}"
        ) from None
    return loader(cfg)


def sample_relpath(split: str, label: int, sample_id: str) -> str:
    """Where one sample lives in a snapshot, relative to data/raw: `<split>/<label>/<id>.npy`."""
    return f"{split}/{int(label)}/{sample_id}.npy"


def write_samples(root: Path, name: str, split: Split) -> None:
    """One .npy file (uint8 C x H x W) per sample under root/<name>/<label>/."""
    for x, y, sid in zip(split.x, split.y.tolist(), split.ids.tolist(), strict=True):
        path = root / sample_relpath(name, y, sid)
        path.parent.mkdir(parents=True, exist_ok=True)
        np.save(path, np.ascontiguousarray(x), allow_pickle=False)
