"""The batch report's data, plots and pages, on hand-made predictions."""

from __future__ import annotations

import numpy as np

from components.data import Split
from components.metrics import Predictions
from components.report_data import histogram, loss_roc, per_class_accuracy, report_data, thumbnails
from components.report_figures import FIGURES, figures, png
from components.report_page import ReportContext, html_page, markdown


def preds(labels, correct_conf: float, wrong: np.ndarray | None = None) -> Predictions:
    labels = np.asarray(labels)
    logits = np.zeros((len(labels), 3))
    logits[np.arange(len(labels)), labels] = np.log(correct_conf / (1 - correct_conf) * 2)
    if wrong is not None:
        logits[wrong] = 0.0
        logits[wrong, (labels[wrong] + 1) % 3] = 5.0
    return Predictions(logits, labels)


def test_per_class_accuracy_names_a_class_missing_from_the_split():
    p = preds([0, 0, 1, 1], 0.9, wrong=np.array([1]))
    assert per_class_accuracy(p, 3) == (50.0, 100.0, None)


def test_loss_roc_is_perfect_when_members_have_lower_loss_and_matches_classes():
    forget = preds([0, 0, 0], 0.99)
    test = Predictions(
        np.vstack([preds([0, 0], 0.4).logits, preds([1], 0.001).logits]), np.array([0, 0, 1])
    )
    fpr, tpr = loss_roc(forget, test)
    # Perfect separation: full TPR at zero FPR. The class-1 image (higher loss still) is left out.
    assert any(f == 0.0 and t == 1.0 for f, t in zip(fpr, tpr, strict=True))
    assert fpr[-1] == 1.0 and tpr[-1] == 1.0


def test_histogram_shares_sum_to_one():
    h = histogram(np.array([0.0, 0.5, 0.99, 1.0]))
    assert abs(sum(h) - 1.0) < 1e-9 and h[-1] == 0.5


def _data(history=(), images=True):
    base = (preds([0, 1], 0.9), preds([0, 1, 2], 0.9), preds([0, 1, 2], 0.8))
    after = (preds([0, 1], 0.2), preds([0, 1, 2], 0.9), preds([0, 1, 2], 0.8))
    split = Split(np.zeros((4, 1, 6, 6), np.uint8), np.zeros(4, np.int64), np.arange(4).astype(str))
    ims = (thumbnails(split, 2), thumbnails(split, 3)) if images else None
    return report_data(base, after, 3, history=history, images=ims)


def test_figures_follow_what_the_data_holds():
    hist = [{"step": 1.0, "loss_forget": 2.0, "loss_retain": 0.1}, {"step": 2.0, "loss_forget": 1}]
    full = figures(_data(hist))
    assert sorted(full) == sorted(FIGURES)
    assert all(png(f)[:4] == b"\x89PNG" for f in full.values())
    assert sorted(figures(_data((), images=False))) == sorted(
        set(FIGURES) - {"loss_curve", "samples"}
    )


def _ctx(passed: bool, figs=None) -> ReportContext:
    gate = {"name": "retained_utility", "value": 97.5, "comparator": ">=", "threshold": 98.0,
            "allowance": 0.5, "passed": passed}  # fmt: skip
    reqs = (
        {
            "id": "req-b",
            "kind": "subject",
            "received_at": "2026-11-02T00",
            "deadline": "2026-12-20",
        },
        {
            "id": "req-a",
            "kind": "samples",
            "received_at": "2026-11-01T00",
            "deadline": "2026-12-01",
        },
    )
    return ReportContext(
        "m version 2", "batch-1", "sample", "awaiting approval", reqs,
        {"acc_dr": 99.0, "acc_df": 100.0}, {"acc_dr": 98.5, "acc_df": 90.0},
        {"passed": passed, "gates": [gate]}, (("certificate sha256", "abc"),), figs or {},
    )  # fmt: skip


def test_markdown_states_requests_by_due_date_metrics_and_each_gate_verdict():
    md = markdown(_ctx(False))
    assert "Requests: 2 (1 samples, 1 subject), first due 2026-12-01" in md
    assert md.index("req-a") < md.index("req-b")
    assert "| retained_utility | 97.50 | >= 98.00 | 0.500 | FAIL |" in md
    assert "Gates: FAILED" in md and "| Acc(Df) % | 100.00 | 90.00 |" in md


def test_html_is_self_contained_one_inline_image_per_figure():
    figs = {n: (cap, png(f)) for n, f in figures(_data()).items() for cap in [FIGURES[n][0]]}
    page = html_page(_ctx(True, figs))
    assert page.count('<img src="data:image/png;base64,') == len(figs) == len(FIGURES) - 1
    assert "http" not in page and "<script" not in page and 'class="pass"' in page
    assert markdown(_ctx(True, figs)).count("](figures/") == len(figs)
    assert "](figures/" not in markdown(_ctx(True, figs), figure_dir=None)
