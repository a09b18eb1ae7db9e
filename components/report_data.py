"""What a batch report plots, reduced from both models' per-example outputs (pure numpy).

Only summaries leave here (per-class accuracies, score histograms, ROC points, a handful of
thumbnails): the report is stored beside the model version, and per-example scores of Df would be
a membership oracle of their own.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from sklearn.metrics import roc_curve

from components.data import Split
from components.metrics import Predictions

SPLITS = ("Df", "Dr", "Dt")  # the order of evaluation: forget, retain sample, test
HIST_BINS = np.linspace(0.0, 1.0, 21)


@dataclass(frozen=True)
class ModelView:
    """One model (base or unlearned) as the plots see it."""

    per_class_acc: tuple[float | None, ...]  # on Dt, one per class; None where Dt has none
    confidence_hist: dict[str, tuple[float, ...]]  # split -> share of examples per HIST_BINS bin
    roc: tuple[tuple[float, ...], tuple[float, ...]]  # loss-MIA ROC: Df vs Dt (fpr, tpr)


@dataclass(frozen=True)
class ReportData:
    base: ModelView
    unlearned: ModelView
    history: tuple[dict[str, float], ...] = ()  # the method's loss records, by step
    forget_images: np.ndarray = field(default_factory=lambda: np.zeros((0, 1, 1, 1), np.uint8))
    retain_images: np.ndarray = field(default_factory=lambda: np.zeros((0, 1, 1, 1), np.uint8))


def true_class_confidence(p: Predictions) -> np.ndarray:
    return p.probs[np.arange(len(p)), p.labels] if len(p) else np.zeros(0)


def per_class_accuracy(p: Predictions, num_classes: int) -> tuple[float | None, ...]:
    out: list[float | None] = []
    for c in range(num_classes):
        m = p.labels == c
        out.append(float(100.0 * p.correct[m].mean()) if m.any() else None)
    return tuple(out)


def histogram(values: np.ndarray) -> tuple[float, ...]:
    counts, _ = np.histogram(values, bins=HIST_BINS)
    return tuple(float(c) / max(1, len(values)) for c in counts)


def loss_roc(forget: Predictions, test: Predictions) -> tuple[tuple[float, ...], ...]:
    """ROC of the loss attack (a lower loss says "member"): Df positive, the test images of Df's
    classes negative (as metrics.loss_mia: otherwise a forgotten class's loss alone separates)."""
    test = test.take(np.isin(test.labels, np.unique(forget.labels)))
    if not len(forget) or not len(test):
        return ((0.0, 1.0), (0.0, 1.0))
    y = np.concatenate([np.ones(len(forget)), np.zeros(len(test))])
    fpr, tpr, _ = roc_curve(y, -np.concatenate([forget.loss, test.loss]))
    return tuple(float(v) for v in fpr), tuple(float(v) for v in tpr)


def model_view(df: Predictions, dr: Predictions, dt: Predictions, num_classes: int) -> ModelView:
    hists = {
        name: histogram(true_class_confidence(p))
        for name, p in zip(SPLITS, (df, dr, dt), strict=True)
    }
    return ModelView(per_class_accuracy(dt, num_classes), hists, loss_roc(df, dt))


def thumbnails(split: Split, n: int, seed: int = 0) -> np.ndarray:
    """Up to n images of a split, drawn reproducibly (NCHW uint8)."""
    if n <= 0 or not len(split):
        return np.zeros((0, *split.x.shape[1:]), np.uint8)
    pick = np.random.default_rng(seed).choice(len(split), size=min(n, len(split)), replace=False)
    return split.x[np.sort(pick)]


def report_data(
    base: tuple[Predictions, Predictions, Predictions],
    unlearned: tuple[Predictions, Predictions, Predictions],
    num_classes: int,
    history: list[dict[str, float]] | tuple[dict[str, float], ...] = (),
    images: tuple[np.ndarray, np.ndarray] | None = None,
) -> ReportData:
    """`base` / `unlearned`: each model's outputs on (Df, Dr, Dt); `images`: (Df, Dr) thumbnails."""
    kw = {"forget_images": images[0], "retain_images": images[1]} if images is not None else {}
    return ReportData(
        model_view(*base, num_classes), model_view(*unlearned, num_classes), tuple(history), **kw
    )
