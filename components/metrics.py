"""Metrics of method.md section 3, from per-example predictions (one forward pass per split).

All percentages are 0-100; AUCs 0-1.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import roc_auc_score
from sklearn.model_selection import StratifiedKFold, cross_val_predict
from sklearn.svm import SVC
from torch import nn

from components.data import Split
from components.models import to_input
from components.runtime import device_policy


@dataclass(frozen=True)
class Predictions:
    """Per-example outputs of one model on one split."""

    logits: np.ndarray  # (N, K) float64
    labels: np.ndarray  # (N,) int64

    def __len__(self) -> int:
        return len(self.labels)

    def take(self, mask: np.ndarray) -> Predictions:
        return Predictions(self.logits[mask], self.labels[mask])

    @property
    def probs(self) -> np.ndarray:
        z = self.logits - self.logits.max(1, keepdims=True)
        e = np.exp(z)
        return e / e.sum(1, keepdims=True)

    @property
    def correct(self) -> np.ndarray:
        return self.logits.argmax(1) == self.labels

    @property
    def loss(self) -> np.ndarray:
        """Per-example cross-entropy."""
        return -np.log(np.clip(self.probs[np.arange(len(self)), self.labels], 1e-30, None))


@torch.no_grad()
def predict(
    model: nn.Module, split: Split, device: torch.device, batch: int | None = None
) -> Predictions:
    batch = batch or device_policy(device).infer_batch
    model = model.to(device).eval()
    out = [
        model(to_input(split.x[i : i + batch]).to(device)).double().cpu().numpy()
        for i in range(0, len(split), batch)
    ]
    logits = np.concatenate(out) if out else np.zeros((0, 0))
    return Predictions(logits=logits, labels=split.y.copy())


def shared_prefix(models: list[nn.Module]) -> tuple[Callable, list[Callable]] | None:
    """The frozen prefix (stem + early stages) all models share bit for bit, else None.

    An RFA model differs from its original only where LoRA sat (ResNetCifar: layer3 + head), so
    evaluating both runs the prefix once; on CPU that prefix is 83 % of a ResNet-20 forward.
    """
    names = getattr(models[0], "PREFIX_MODULES", None)
    if names is None or not all(
        getattr(m, "PREFIX_MODULES", None) == names and hasattr(m, "suffix") for m in models
    ):
        return None

    def prefix_state(m: nn.Module) -> dict[str, torch.Tensor]:
        return {f"{n}.{k}": v for n in names for k, v in getattr(m, n).state_dict().items()}

    ref = prefix_state(models[0])
    for m in models[1:]:
        other = prefix_state(m)
        if other.keys() != ref.keys() or not all(torch.equal(other[k], ref[k]) for k in ref):
            return None
    return models[0].prefix


@torch.no_grad()
def predict_many(
    models: list[nn.Module], split: Split, device: torch.device, batch: int | None = None
) -> list[Predictions]:
    """`predict` for several models on one split; a prefix they share runs once per batch."""
    batch = batch or device_policy(device).infer_batch
    models = [m.to(device).eval() for m in models]
    prefix = shared_prefix(models)
    outs: list[list[np.ndarray]] = [[] for _ in models]
    for i in range(0, len(split), batch):
        x = to_input(split.x[i : i + batch]).to(device)
        h = prefix(x) if prefix is not None else None
        for out, m in zip(outs, models, strict=True):
            out.append((m.suffix(h) if h is not None else m(x)).double().cpu().numpy())
    return [
        Predictions(logits=np.concatenate(o) if o else np.zeros((0, 0)), labels=split.y.copy())
        for o in outs
    ]


def accuracy(p: Predictions) -> float | None:
    return float(100.0 * p.correct.mean()) if len(p) else None


# --- attack features (each maps predictions to one score per example) ---


def confidence(p: Predictions) -> np.ndarray:
    """Softmax probability of the true class."""
    return p.probs[np.arange(len(p)), p.labels]


def entropy(p: Predictions) -> np.ndarray:
    q = np.clip(p.probs, 1e-30, 1.0)
    return -(q * np.log(q)).sum(1)


def modified_entropy(p: Predictions) -> np.ndarray:
    """Song & Mittal (2021): -(1-p_y) log p_y - sum_{j != y} p_j log(1 - p_j).

    Monotone in the true-class probability and in the wrong-class mass, unlike plain entropy,
    which cannot tell a confident right answer from a confident wrong one.
    """
    q = np.clip(p.probs, 1e-30, 1 - 1e-12)
    rows = np.arange(len(p))
    py = q[rows, p.labels]
    term_true = -(1 - py) * np.log(py)
    wrong = -q * np.log(1 - q)
    wrong[rows, p.labels] = 0.0
    return term_true + wrong.sum(1)


ATTACK_FEATURES = {
    "confidence": confidence,
    "entropy": entropy,
    "modified_entropy": modified_entropy,
}


def _svc(members: np.ndarray, nonmembers: np.ndarray) -> SVC:
    x = np.concatenate([members, nonmembers])[:, None]
    y = np.concatenate([np.ones(len(members)), np.zeros(len(nonmembers))])
    return SVC(C=3, gamma="auto", kernel="rbf").fit(x, y)


def mia_efficacy(
    retain: Predictions,
    test: Predictions,
    targets: dict[str, Predictions],
    feature: str = "confidence",
    seed: int = 0,
) -> dict[str, float]:
    """SVC attack (l1-sparse / SalUn recipe): trained on |Dt| retain (member) vs Dt (non-member).

    Both sides get the same size: where fewer retained examples are evaluated than Dt holds
    (`evaluation.retain_eval_max` below |Dt|), Dt is subsampled too. An unbalanced SVC leans to
    the larger side: with 2,000 members against 5,000 non-members it called every CIFAR-10 image
    non-member, MIA-efficacy 100 for the original model (balanced: 1.5).
    Returns, per target split, the share predicted non-member x100 (for Df: MIA-efficacy).
    """
    f = ATTACK_FEATURES[feature]
    rng = np.random.default_rng(seed)
    n = min(len(retain), len(test))
    idx = rng.choice(len(retain), size=n, replace=False)
    # Dt is kept whole (and in order) when it is the smaller side: the tables' runs are unchanged.
    nonmembers = (
        test if len(test) == n else test.take(np.sort(rng.choice(len(test), size=n, replace=False)))
    )
    clf = _svc(f(retain.take(idx)), f(nonmembers))
    return {
        name: float(100.0 * (clf.predict(f(p)[:, None]) == 0).mean())
        for name, p in targets.items()
        if len(p)
    }


def mia_unseen(
    retain: Predictions,
    test: Predictions,
    forget: Predictions,
    feature: str = "confidence",
    seed: int = 0,
    folds: int = 2,
) -> dict[str, float]:
    """`mia_efficacy` cross-fitted over Dt, for a non-member baseline that no attack (and no
    unlearning target) trained on: fold k's attack learns Dr vs Dt without fold k, then scores
    fold k and Df. Returns x100 `unseen` (Dt images called non-member by the attack that never saw
    them) and `forget` (Df called non-member, mean over the same attacks), so the two rates come
    from the same attacks. Two folds keep the attacks' size: with Dt over twice |Dr eval| each
    still trains on as many non-members as `mia_efficacy`'s."""
    fold = np.random.default_rng(seed).permutation(len(test)) % folds
    unseen = forget_rate = 0.0
    for k in range(folds):
        held = test.take(fold == k)
        targets = {"forget": forget, "held": held}
        eff = mia_efficacy(retain, test.take(fold != k), targets, feature=feature, seed=seed + k)
        unseen += eff.get("held", 0.0) * len(held)
        forget_rate += eff["forget"] / folds
    return {"unseen": unseen / len(test), "forget": forget_rate}


def retain_leakage(retain: Predictions, test: Predictions, seed: int = 0) -> float:
    """The same attack trained on one half of (retain, test), scored on the other half.

    Balanced accuracy x100 on held-out retain vs held-out test: how well membership of retained
    data still leaks. 50 = no leakage.
    """
    rng = np.random.default_rng(seed)
    n = min(len(retain), len(test))
    r = rng.choice(len(retain), size=n, replace=False)
    t = rng.permutation(len(test))[:n]
    half = n // 2
    f = confidence
    clf = _svc(f(retain.take(r[:half])), f(test.take(t[:half])))
    tpr = (clf.predict(f(retain.take(r[half:]))[:, None]) == 1).mean()
    tnr = (clf.predict(f(test.take(t[half:]))[:, None]) == 0).mean()
    return float(100.0 * (tpr + tnr) / 2)


def loss_mia(
    forget: Predictions, test: Predictions, folds: int = 10, seed: int = 0
) -> dict[str, float]:
    """Population loss attack (NeurIPS'23 unlearning kit): Df (label 1) versus an equal-size,
    class-matched test sample (label 0), scored by per-example cross-entropy.

    `acc` is the kit's logistic regression with stratified k-fold CV. `auc` is the rank AUC of
    -loss itself (P(loss on Df < loss on test)): the logistic model is monotone in one feature,
    so its only job is the direction, and cross-validating that direction biases the AUC below
    0.5 when there is no signal (seen here: 0.35-0.43 for models with nothing to hide). The rank
    AUC has no such bias: 0.5 = Df indistinguishable from unseen data, < 0.5 = over-forgetting.
    """
    rng = np.random.default_rng(seed)
    picks = []
    for c, n in zip(*np.unique(forget.labels, return_counts=True), strict=True):
        pool = np.flatnonzero(test.labels == c)
        picks.append(rng.choice(pool, size=min(n, len(pool)), replace=False))
    t = test.take(np.concatenate(picks)) if picks else test
    x = np.concatenate([forget.loss, t.loss])[:, None]
    x = np.log(np.clip(x, 1e-30, None))  # CE spans decades; logistic regression needs a sane scale
    y = np.concatenate([np.ones(len(forget)), np.zeros(len(t))])
    k = int(min(folds, len(forget), len(t)))
    if k < 2:
        return {"acc": float("nan"), "auc": float("nan"), "n_test": float(len(t))}
    cv = StratifiedKFold(n_splits=k, shuffle=True, random_state=seed)
    prob = cross_val_predict(LogisticRegression(), x, y, cv=cv, method="predict_proba")[:, 1]
    return {
        "acc": float(((prob > 0.5) == y).mean()),
        "auc": float(roc_auc_score(y, -x[:, 0])),
        "n_test": float(len(t)),
    }


def auc_standard_error(auc: float, n_pos: int, n_neg: int) -> float:
    """Hanley & McNeil (1982) standard error of an AUC estimate."""
    a = min(max(auc, 1e-6), 1 - 1e-6)
    q1, q2 = a / (2 - a), 2 * a * a / (1 + a)
    var = (a * (1 - a) + (n_pos - 1) * (q1 - a * a) + (n_neg - 1) * (q2 - a * a)) / max(
        1, n_pos * n_neg
    )
    return float(np.sqrt(max(var, 0.0)))


def rate_standard_error(p_pct: float, n: int) -> float:
    """Binomial standard error, in points, of a rate measured on n samples.

    Uses the Agresti-Coull-style estimate (x + 1) / (n + 2) so that a rate of 0 or 100 on a few
    samples still carries its honest uncertainty instead of a zero error.
    """
    n = max(int(n), 1)
    p = (min(max(p_pct / 100.0, 0.0), 1.0) * n + 1) / (n + 2)
    return float(100.0 * np.sqrt(p * (1 - p) / n))


def two_rate_standard_error(p1_pct: float, n1: int, p2_pct: float, n2: int) -> float:
    """Standard error, in points, of the difference of two rates under the hypothesis that they
    are equal (pooled two-proportion test), with +1/+2 smoothing so 0 or 100 is not certain."""
    n1, n2 = max(int(n1), 1), max(int(n2), 1)
    pooled = (p1_pct / 100.0 * n1 + p2_pct / 100.0 * n2 + 1) / (n1 + n2 + 2)
    return float(100.0 * np.sqrt(pooled * (1 - pooled) * (1 / n1 + 1 / n2)))
