"""RFA's loss terms as pure tensor functions (method.md 1.2).

    L = L_r + lambda * L_f  (+ retain_ce_weight * CE on Dr)
    L_r = d(student logits, teacher logits) + sum_taps d(student tap, teacher tap)     on Dr
    L_f = forget_loss(student logits, target logits)
          + feature_weight * sum_taps d(pooled student tap, target pooled tap)        on Df
          (+ probe_weight * recognition penalty, components/unlearning/adversary.py)

with d = `relative_sq_distance`. L_r keeps the residual the adapter adds at zero on retained data;
L_f shifts it on the forget data towards a target built from the teacher (targets.py). The terms
are summed in the order written here: the loop adds them in this order so a run is bit-for-bit
repeatable.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from components.unlearning.taps import pooled

EPS = 1e-8
ForgetLoss = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def relative_sq_distance(f: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of ||f - g||^2 / ||g||^2 per sample.

    f, g: (B, ...) same shape -> scalar. Scale-free, so taps of different width and magnitude
    weigh alike.
    """
    f2, g2 = f.flatten(1), g.flatten(1)
    return ((f2 - g2).pow(2).sum(1) / (g2.pow(2).sum(1) + EPS)).mean()


def logit_mse(student: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-sample squared logit error, summed over classes (one edited logit counts fully).

    (B, K), (B, K) -> scalar.
    """
    return (student - target).pow(2).sum(1).mean()


def target_kl(student: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """KL(softmax(target) || softmax(student)), mean over the batch. (B, K), (B, K) -> scalar.

    Why for sample unlearning: most Df samples are confident both before and after (margin 20 or
    10 is the same probability 1.0), yet squared logit error is dominated by exactly those large
    margin cuts, while the few samples whose target is a wrong prediction (the ones that decide
    Acc(Df) and the attacks) weigh little. In probability space those saturated samples contribute
    ~0 and the flips carry the loss.
    """
    return F.kl_div(
        F.log_softmax(student, 1), F.log_softmax(target, 1), log_target=True, reduction="batchmean"
    )


FORGET_LOSSES: dict[str, ForgetLoss] = {"logit_mse": logit_mse, "kl": target_kl}


def get_forget_loss(name: str) -> ForgetLoss:
    """The registered forget loss `name`; ValueError naming the choices otherwise."""
    try:
        return FORGET_LOSSES[name]
    except KeyError:
        raise ValueError(
            f"unknown forget loss {name!r}; choose one of {sorted(FORGET_LOSSES)}"
        ) from None


def retain_residual(
    s_logits: torch.Tensor,
    t_logits: torch.Tensor,
    s_taps: dict[str, torch.Tensor],
    t_taps: dict[str, torch.Tensor],
    rows: slice = slice(None),
) -> torch.Tensor:
    """L_r: the student's logits and tap outputs on Dr against the teacher's.

    s_logits (B, K) and s_taps {tap: (B, ...)} hold Dr in `rows` (the loop runs one batch of
    [retain; forget]); t_logits (Br, K) and t_taps {tap: (Br, ...)} are the teacher's on those
    rows. Zero exactly when the adapter leaves retained inputs untouched at every tap.
    """
    loss = relative_sq_distance(s_logits[rows], t_logits)
    for t, tf in t_taps.items():
        loss = loss + relative_sq_distance(s_taps[t][rows], tf)
    return loss


def forget_residual(
    forget_loss: ForgetLoss,
    s_logits: torch.Tensor,
    target_logits: torch.Tensor,
    s_taps: dict[str, torch.Tensor],
    target_pooled: dict[str, torch.Tensor],
    feature_weight: float,
    rows: slice = slice(None),
) -> torch.Tensor:
    """L_f without the probe term: the student's logits on Df to the target's, and its pooled
    taps to the target's features (only the taps the target defines; sample targets define none).

    s_logits (B, K) and s_taps {tap: (B, C, ...)} hold Df in `rows`; target_logits (Bf, K) and
    target_pooled {tap: (Bf, C)} are the targets of those rows.
    """
    loss = forget_loss(s_logits[rows], target_logits)
    for t, tf in target_pooled.items():
        loss = loss + feature_weight * relative_sq_distance(pooled(s_taps[t][rows]), tf)
    return loss


def rfa_objective(loss_r: torch.Tensor, loss_f: torch.Tensor, forget_weight: float) -> torch.Tensor:
    """L = L_r + lambda * L_f (scalars)."""
    return loss_r + forget_weight * loss_f


def retain_ce(
    s_logits: torch.Tensor, labels: torch.Tensor, weight: float, loss: torch.Tensor
) -> torch.Tensor:
    """`loss` plus the optional cross-entropy of the retain batch (B, K) on its labels (B,).

    Why: with the adversarial probe on, it lets the head re-fit the retained classes that the
    feature edit disturbed. weight 0 returns `loss` itself (no extra graph node).
    """
    if weight <= 0:
        return loss
    return loss + weight * F.cross_entropy(s_logits, labels)
