"""The batch report's plots (matplotlib, no display): one function per figure, in a registry so
the report, MLflow's `log_figure` and the tests walk the same list."""

from __future__ import annotations

import io
from collections.abc import Callable

import matplotlib

matplotlib.use("Agg")  # headless: no display on servers, workers or CI

import numpy as np  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from components.report_data import HIST_BINS, SPLITS, ModelView, ReportData  # noqa: E402

BEFORE, AFTER = "#7f7f7f", "#1f77b4"


def per_class_accuracy(d: ReportData) -> Figure:
    fig = Figure(figsize=(6.4, 3.2), layout="constrained")
    ax = fig.subplots()
    k = len(d.base.per_class_acc)
    x = np.arange(k)
    for off, view, label, color in (
        (-0.2, d.base, "base", BEFORE),
        (0.2, d.unlearned, "unlearned", AFTER),
    ):
        ax.bar(x + off, [np.nan if v is None else v for v in view.per_class_acc], 0.4,
               label=label, color=color)  # fmt: skip
    ax.set(xticks=x, xlabel="class", ylabel="accuracy on Dt (%)", ylim=(0, 105))
    ax.set_title("Per-class test accuracy, before and after")
    ax.legend(loc="lower right")
    return fig


def _hist(ax: object, view: ModelView, title: str) -> None:
    centers = (HIST_BINS[:-1] + HIST_BINS[1:]) / 2
    for split, color in zip(SPLITS, ("#d62728", "#2ca02c", "#1f77b4"), strict=True):
        ax.step(centers, view.confidence_hist[split], where="mid", label=split, color=color)
    ax.set(title=title, xlabel="true-class confidence", ylim=(0, 1.02))


def confidence_histograms(d: ReportData) -> Figure:
    fig = Figure(figsize=(8, 3.2), layout="constrained")
    a, b = fig.subplots(1, 2, sharey=True)
    _hist(a, d.base, "base")
    _hist(b, d.unlearned, "unlearned")
    a.set_ylabel("share of the split")
    b.legend()
    fig.suptitle("Confidence on Df (forget), Dr (retain) and Dt (test)")
    return fig


def mia_roc(d: ReportData) -> Figure:
    fig = Figure(figsize=(4.2, 4.0), layout="constrained")
    ax = fig.subplots()
    for view, label, color in ((d.base, "base", BEFORE), (d.unlearned, "unlearned", AFTER)):
        ax.plot(*view.roc, label=label, color=color)
    ax.plot([0, 1], [0, 1], ":", color="black", label="chance")
    ax.set(xlabel="false positive rate (Dt, Df's classes)", ylabel="true positive rate (Df)")
    ax.set_title("Loss membership attack: Df vs unseen test images")
    ax.legend(loc="lower right")
    return fig


def loss_curve(d: ReportData) -> Figure:
    fig = Figure(figsize=(6.4, 3.2), layout="constrained")
    ax = fig.subplots()
    keys = sorted({k for h in d.history for k in h if k.startswith("loss")})
    for key in keys:
        pts = [(h["step"], h[key]) for h in d.history if key in h and "step" in h]
        if pts:
            ax.plot(*zip(*pts, strict=True), label=key)
    ax.set(xlabel="step", ylabel="loss", title="Unlearning loss by step")
    if keys:
        ax.set_yscale("symlog", linthresh=1e-3)
        ax.legend()
    return fig


def _tile(images: np.ndarray) -> np.ndarray:
    """NCHW uint8 -> one HWC row."""
    if not len(images):
        return np.zeros((8, 8, 3), np.uint8)
    row = np.concatenate(list(images), axis=2)  # C, H, N*W
    row = np.repeat(row, 3, axis=0) if row.shape[0] == 1 else row
    return row.transpose(1, 2, 0)


def sample_grid(d: ReportData) -> Figure:
    fig = Figure(figsize=(8, 2.6), layout="constrained")
    a, b = fig.subplots(2, 1)
    for ax, images, title in (
        (a, d.forget_images, "forgotten (Df)"),
        (b, d.retain_images, "retained (Dr)"),
    ):
        ax.imshow(_tile(images), interpolation="nearest")
        ax.set_title(f"{title}: {len(images)} examples", fontsize=9)
        ax.axis("off")
    return fig


FIGURES: dict[str, tuple[str, Callable[[ReportData], Figure]]] = {
    "per_class_accuracy": ("Per-class accuracy on Dt", per_class_accuracy),
    "confidence": ("Confidence on Df / Dr / Dt", confidence_histograms),
    "mia_roc": ("Membership attack ROC", mia_roc),
    "loss_curve": ("RFA loss curve", loss_curve),
    "samples": ("Forgotten and retained inputs", sample_grid),
}


def figures(d: ReportData) -> dict[str, Figure]:
    """Every figure the data supports (no sample grid without images, no curve without history)."""
    skip = {"samples"} if not len(d.forget_images) else set()
    skip |= {"loss_curve"} if not d.history else set()
    return {name: draw(d) for name, (_, draw) in FIGURES.items() if name not in skip}


def png(fig: Figure) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    return buf.getvalue()
