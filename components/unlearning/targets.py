"""Forget targets: where RFA moves each forget sample, built from the frozen teacher's view.

Targets live in the `FORGET_TARGETS` registry so they can be swapped and measured. Class targets
move Df onto the retained class the teacher ranks next (logits and features); the sample target
gives Df the margins of non-members, rank for rank.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F


def margins(logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """True-class margin z_y - max_{j != y} z_j. logits (B, K), labels (B,) -> (B,)."""
    true = logits.gather(1, labels[:, None]).squeeze(1)
    other = logits.scatter(1, labels[:, None], float("-inf")).amax(1)
    return true - other


@dataclass
class ForgetTarget:
    """Per-forget-sample targets: logits (Nf, K) and optional pooled tap features {tap: (Nf, C)}."""

    logits: torch.Tensor
    features: dict[str, torch.Tensor]


@dataclass
class TeacherView:
    """Teacher outputs the targets are built from (all detached, CPU)."""

    forget_logits: torch.Tensor  # (Nf, K)
    forget_pooled: dict[str, torch.Tensor]  # tap -> (Nf, C)
    forget_labels: torch.Tensor  # (Nf,)
    retain_logits: torch.Tensor  # (Nr', K) a retain subsample
    retain_labels: torch.Tensor  # (Nr',)
    retain_pooled: dict[str, torch.Tensor]  # tap -> (Nr', C)
    heldout_logits: torch.Tensor  # (Nh, K) non-member reference
    heldout_labels: torch.Tensor  # (Nh,)
    forget_classes: tuple[int, ...]


def masked_nearest_class(view: TeacherView, min_per_class: int = 30) -> ForgetTarget:
    """Class unlearning: map each forget sample onto the retained class the teacher ranks next.

    A model that never saw class c would put an image of c on its most similar known class. So the
    target logits are the teacher's with the forgotten classes pushed below every retained logit,
    and the target pooled features of each tap are the teacher's mean features of that next class
    (so the class is forgotten in the features, not only at the head).
    """
    z = view.forget_logits.clone()
    forgotten = list(view.forget_classes)
    keep = torch.ones(z.shape[1], dtype=torch.bool)
    keep[forgotten] = False
    lowest = z[:, keep].amin(1)
    z[:, forgotten] = (lowest - 1.0)[:, None]
    nearest = z.argmax(1)
    feats: dict[str, torch.Tensor] = {}
    for tap, pooled_r in view.retain_pooled.items():
        means = torch.zeros(z.shape[1], pooled_r.shape[1])
        for k in nearest.unique().tolist():
            means[k] = pooled_r[view.retain_labels == k].mean(0)
        feats[tap] = means[nearest]
    return ForgetTarget(logits=z, features=feats)


def _retained_features(view: TeacherView, base: ForgetTarget, idx: torch.Tensor) -> ForgetTarget:
    """`base`'s logits with every tap's target set to the teacher features of retained samples `idx`
    (one per forget sample): the shared tail of the sample-pairing class targets."""
    return ForgetTarget(
        logits=base.logits, features={t: f[idx] for t, f in view.retain_pooled.items()}
    )


def masked_class_sample(view: TeacherView, min_per_class: int = 30, seed: int = 0) -> ForgetTarget:
    """Class unlearning, distribution version: logits as `masked_nearest_class`, but each forget
    sample's target features are those of one random retained sample of its next class.

    A class mean is a single point: forget features pulled onto it form a tight cluster that a
    linear probe still separates from the real members of that class. Pairing with real samples
    spreads the forgotten class over the next class's own distribution, as a model that never saw
    the class would.
    """
    base = masked_nearest_class(view, min_per_class)
    nearest = base.logits.argmax(1)
    gen = torch.Generator().manual_seed(seed)
    pick = torch.empty(len(nearest), dtype=torch.long)
    for k in nearest.unique().tolist():
        pool = torch.nonzero(view.retain_labels == k).flatten()
        sel = nearest == k
        pick[sel] = pool[torch.randint(len(pool), (int(sel.sum()),), generator=gen)]
    return _retained_features(view, base, pick)


def masked_nearest_neighbour(view: TeacherView, min_per_class: int = 30) -> ForgetTarget:
    """Class unlearning, on the retained feature manifold: logits as `masked_nearest_class`; each
    forget sample's target features (every tap) are those of its nearest retained neighbour in the
    teacher's last-tap feature space, restricted to retained classes.

    A class mean is one point off the data: forget features pulled onto it stay a separate cluster
    that a linear probe still decodes. The nearest retained neighbour is the closest point that a
    model which never saw the class could produce, and similar forget images get similar targets,
    so the map is smooth enough for a low-rank adapter to learn.
    """
    base = masked_nearest_class(view, min_per_class)
    last = list(view.retain_pooled)[-1]
    keep = ~torch.isin(view.retain_labels, torch.tensor(view.forget_classes))
    pool = torch.nonzero(keep).flatten()
    ref = view.retain_pooled[last][pool]
    nn_idx = pool[torch.cdist(view.forget_pooled[last], ref).argmin(1)]
    return _retained_features(view, base, nn_idx)


def _quantile_map(values: torch.Tensor, nonmembers: torch.Tensor) -> torch.Tensor:
    """Monotone (rank-preserving) map of `values` onto the non-member distribution.

    The i-th smallest of n values gets the non-member quantile (i + 0.5) / n: in one dimension
    this is the optimal-transport map, so the edited values have the non-member distribution
    (e.g. the same share of negative margins = the same error rate) while keeping their order.
    """
    n = len(values)
    ranks = values.argsort().argsort().float()
    return torch.quantile(nonmembers, (ranks + 0.5) / n)


def margin_quantile(view: TeacherView, min_per_class: int = 30) -> ForgetTarget:
    """Sample unlearning: give Df the true-class margins of non-members, rank for rank.

    Df's teacher margins (z_y - max other) are mapped monotonically onto the heldout (non-member)
    margin distribution, per class where both sides have `min_per_class` samples, else pooled.
    Only the true-class logit is edited, so the ranking of the other classes is the teacher's.
    Why not rank Df among all members: with a few dozen forget samples that leaves the count of
    misclassified targets to chance; matching Df's own distribution fixes it at the non-member
    error rate.
    """
    m_f = margins(view.forget_logits, view.forget_labels)
    m_h = margins(view.heldout_logits, view.heldout_labels)
    target = _quantile_map(m_f, m_h)
    for c in view.forget_labels.unique().tolist():
        sel_f, sel_h = view.forget_labels == c, view.heldout_labels == c
        if int(sel_f.sum()) >= min_per_class and int(sel_h.sum()) >= min_per_class:
            target[sel_f] = _quantile_map(m_f[sel_f], m_h[sel_h])
    z = view.forget_logits.clone()
    rows = torch.arange(len(z))
    other = z.scatter(1, view.forget_labels[:, None], float("-inf")).amax(1)
    z[rows, view.forget_labels] = other + target
    return ForgetTarget(logits=z, features={})


FORGET_TARGETS: dict[str, Callable[[TeacherView], ForgetTarget]] = {
    "masked_nearest_class": masked_nearest_class,
    "masked_class_sample": masked_class_sample,
    "masked_nearest_neighbour": masked_nearest_neighbour,
    "margin_quantile": margin_quantile,
}


# Targets built from the non-member reference: only these need the teacher's pass over it
# (5,000 CIFAR images, about 10 s on one CPU thread, wasted for class targets).
NEEDS_HELDOUT = frozenset({"margin_quantile"})
# Targets built from the teacher's view of a retain subsample (class means, paired or nearest
# retained samples). margin_quantile never reads it: skipping that pass saves 4,000 images.
NEEDS_RETAIN_REFERENCE = frozenset(
    {"masked_nearest_class", "masked_class_sample", "masked_nearest_neighbour"}
)


def target_divergence(teacher: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Per-sample KL(softmax(target) || softmax(teacher)): how far a target moves each prediction
    (0 where the target is the teacher's own output). (N, K), (N, K) -> (N,)."""
    return (
        F.kl_div(
            F.log_softmax(teacher, 1), F.log_softmax(target, 1), log_target=True, reduction="none"
        )
        .sum(1)
        .clamp_min(0.0)
    )


def get_target(name: str) -> Callable[[TeacherView], ForgetTarget]:
    try:
        return FORGET_TARGETS[name]
    except KeyError:
        raise ValueError(
            f"unknown forget target {name!r}; choose one of {sorted(FORGET_TARGETS)}"
        ) from None
