"""Evaluation of one model on the batch's splits: every metric the gates and the report need."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from components.data import Split
from components.metrics import (
    Predictions,
    accuracy,
    loss_mia,
    mia_efficacy,
    mia_unseen,
    predict_many,
    retain_leakage,
)
from components.runtime import timed
from components.settings import EvaluationSettings


@dataclass(frozen=True)
class EvalSplits:
    """Df, a Dr sample and Dt, plus the forgotten classes: all the gates read. No heldout split:
    the non-member reference RFA's sample target is built from must not be what a gate compares
    against (method.md's leakage rule), so the attacks' non-member baseline is Dt itself,
    cross-fitted (`metrics.mia_unseen`)."""

    forget: Split
    retain: Split
    test: Split
    forget_classes: tuple[int, ...] = ()

    @classmethod
    def build(
        cls,
        forget: Split,
        retain: Split,
        test: Split,
        forget_classes: tuple[int, ...],
        cfg: EvaluationSettings,
    ) -> EvalSplits:
        rng = np.random.default_rng(cfg.seed)
        if len(retain) > cfg.retain_eval_max:
            retain = retain.take(
                np.sort(rng.choice(len(retain), size=cfg.retain_eval_max, replace=False))
            )
        return cls(forget, retain, test, tuple(forget_classes))


def evaluate(
    model: nn.Module,
    s: EvalSplits,
    cfg: EvaluationSettings,
    device: torch.device,
    timings: dict[str, float] | None = None,
) -> dict[str, float | None]:
    """Accuracies (Dr, Df, Dt, Drt, Dft), MIA-efficacy (3 features) with its unseen-Dt baseline,
    loss-MIA accuracy/AUC and retain leakage. Percentages 0-100, AUC 0-1. `timings` collects the
    seconds of the forward passes (`predict`) and of the attacks."""
    return evaluate_many([model], s, cfg, device, timings)[0]


def evaluate_many(
    models: list[nn.Module],
    s: EvalSplits,
    cfg: EvaluationSettings,
    device: torch.device,
    timings: dict[str, float] | None = None,
) -> list[dict[str, float | None]]:
    """`evaluate` for several models (the original and the unlearned) on the same splits; the
    forward passes share whatever prefix the models share (metrics.predict_many)."""
    return evaluate_outputs(models, s, cfg, device, timings)[0]


# Each model's outputs on (Dr, Df, Dt), in that order.
Outputs = tuple[Predictions, Predictions, Predictions]


def evaluate_outputs(
    models: list[nn.Module],
    s: EvalSplits,
    cfg: EvaluationSettings,
    device: torch.device,
    timings: dict[str, float] | None = None,
) -> tuple[list[dict[str, float | None]], list[Outputs]]:
    """`evaluate_many`, also returning each model's outputs (the batch report plots them)."""
    with timed(timings, "predict"):
        per_split = [predict_many(models, sp, device) for sp in (s.retain, s.forget, s.test)]
    outputs = [tuple(p[i] for p in per_split) for i in range(len(models))]
    # The attacks' SVCs (libsvm) release the GIL: each model's run side by side on its own thread
    # (4.0 -> 2.3 s for four fits on 2 cores). Every draw inside is seeded per call: same results.
    with timed(timings, "attacks"), ThreadPoolExecutor(max_workers=len(models)) as pool:
        metrics = list(pool.map(lambda o: _metrics(s, cfg, *o), outputs))
    return metrics, outputs  # type: ignore[return-value]


def _metrics(
    s: EvalSplits,
    cfg: EvaluationSettings,
    dr: Predictions,
    df: Predictions,
    dt: Predictions,
) -> dict[str, float | None]:
    m: dict[str, float | None] = {
        "acc_dr": accuracy(dr),
        "acc_df": accuracy(df),
        "acc_dt": accuracy(dt),
        "acc_drt": None,
        "acc_dft": None,
    }
    attack_test, unseen_class = dt, None
    if s.forget_classes:
        in_f = np.isin(dt.labels, np.array(s.forget_classes))
        m["acc_drt"], m["acc_dft"] = accuracy(dt.take(~in_f)), accuracy(dt.take(in_f))
        # Dr holds no forgotten class, so the attacks' non-member side must not either: otherwise
        # the forgotten class's low confidence alone would look like membership signal.
        attack_test = dt.take(~in_f)
        unseen_class = dt.take(
            in_f
        )  # Dft: images of the forgotten class the model never trained on
    for feature, suffix in (
        ("confidence", ""),
        ("entropy", "_entropy"),
        ("modified_entropy", "_modified_entropy"),
    ):
        targets = {"forget": df, **({"dft": unseen_class} if unseen_class is not None else {})}
        eff = mia_efficacy(dr, attack_test, targets, feature=feature, seed=cfg.seed)
        m["mia_efficacy" + suffix] = eff.get("forget")
        if unseen_class is not None:
            m["mia_dft" + suffix] = eff.get("dft")
        else:  # the sample gate's baseline; a class gate reads Dft instead (gates._mia_class)
            cross = mia_unseen(dr, attack_test, df, feature=feature, seed=cfg.seed)
            m["mia_forget_cf" + suffix], m["mia_unseen" + suffix] = cross["forget"], cross["unseen"]
    lm = loss_mia(df, dt, folds=cfg.loss_mia_folds, seed=cfg.seed)
    m["loss_mia_acc"], m["loss_mia_auc"], m["n_forget_test"] = lm["acc"], lm["auc"], lm["n_test"]
    m["retain_leakage"] = retain_leakage(dr, attack_test, seed=cfg.seed)
    m["n_forget"], m["n_retain_eval"], m["n_test"] = (
        float(len(df)),
        float(len(dr)),
        float(len(attack_test)),
    )
    m["n_dt"] = float(len(dt))
    m["n_dft"] = float(len(dt) - len(attack_test))
    return m
