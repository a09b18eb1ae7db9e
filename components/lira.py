"""A per-example membership attack: LiRA (Carlini et al., "Membership Inference Attacks From
First Principles", S&P 2022), online, with a fixed variance.

Shadow models are trained on random halves of a pool, so every pool example is inside about half
of them and outside the rest. For one example the attack compares the target model's
logit-scaled confidence on it with the shadows' that trained on it (in) and those that did not
(out), as Gaussians: score = log N(phi; mu_in, s_in^2) - log N(phi; mu_out, s_out^2). High = the
model treats the example as a member.

For unlearning the question is whether Df still looks in: scored on Df (positives) against images
no model trained on (negatives), Retrain sits near AUC 0.5 and the untouched original well above
it. This is LiRA on the unlearned model, not U-LiRA (Hayes et al. 2024): there the in-side comes
from shadow models that trained on the example and were then *unlearned* by the method under test,
which needs every method run on every shadow. Pure numpy / sklearn; the shadows live in
benchmarks/shadows.py.
"""

from __future__ import annotations

import numpy as np
from scipy.special import logsumexp
from scipy.stats import norm
from sklearn.metrics import roc_auc_score, roc_curve


def logit_confidence(logits: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """phi = log(p_y / (1 - p_y)), computed as z_y - logsumexp(z_other): no 1 - p rounding to
    zero for a confident model (LiRA's reason for this scale: it makes phi near Gaussian)."""
    z = np.asarray(logits, dtype=np.float64)
    rows = np.arange(len(z))
    zy = z[rows, labels]
    other = z.copy()
    other[rows, labels] = -np.inf
    return zy - logsumexp(other, axis=1)


def lira_scores(target: np.ndarray, shadow: np.ndarray, inside: np.ndarray) -> np.ndarray:
    """Per-example log-likelihood ratios. `target` (N,) the attacked model's phi; `shadow` (S, N)
    the shadows' phi; `inside` (S, N) whether each shadow trained on each example. Means are per
    example; each side's variance is pooled over all examples (the fixed-variance variant, which
    the paper prefers below 64 shadows: a per-example variance from 4 values is noise)."""
    inside = np.asarray(inside, dtype=bool)
    n_in, n_out = inside.sum(0), (~inside).sum(0)
    if (n_in == 0).any() or (n_out == 0).any():
        raise ValueError("every example needs shadows with it and without it: train more shadows")
    mu_in = (shadow * inside).sum(0) / n_in
    mu_out = (shadow * ~inside).sum(0) / n_out
    sd_in = _pooled_sd(shadow - mu_in, inside)
    sd_out = _pooled_sd(shadow - mu_out, ~inside)
    return norm.logpdf(target, mu_in, sd_in) - norm.logpdf(target, mu_out, sd_out)


def _pooled_sd(residual: np.ndarray, mask: np.ndarray) -> float:
    dof = max(1, int(mask.sum()) - int(mask.any(0).sum()))  # one mean fitted per example
    return float(np.sqrt((residual[mask] ** 2).sum() / dof)) + 1e-6


def attack_summary(positive: np.ndarray, negative: np.ndarray, fpr: float = 0.01) -> dict:
    """AUC of positives (Df) over negatives (never-trained images), and the true-positive rate at
    `fpr` false positives (the low-FPR regime the paper argues an attack must be judged in)."""
    y = np.r_[np.ones(len(positive)), np.zeros(len(negative))]
    s = np.r_[positive, negative]
    f, t, _ = roc_curve(y, s)
    return {"auc": float(roc_auc_score(y, s)), "tpr": float(t[f <= fpr].max())}
