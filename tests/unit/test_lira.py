"""LiRA's arithmetic (components/lira.py) on synthetic shadow statistics."""

import numpy as np
import pytest

from benchmarks.shadows import halves
from components.lira import attack_summary, lira_scores, logit_confidence


def test_logit_confidence_is_the_log_odds_and_stays_finite_when_confident():
    logits = np.array([[2.0, 0.0, -1.0], [800.0, 0.0, 0.0]])
    phi = logit_confidence(logits, np.array([0, 0]))
    p = np.exp(2.0) / np.exp([2.0, 0.0, -1.0]).sum()
    assert phi[0] == pytest.approx(np.log(p / (1 - p)))
    assert np.isfinite(phi[1]) and phi[1] == pytest.approx(800.0 - np.log(2.0))


def test_members_score_above_non_members_and_a_model_without_them_scores_like_chance():
    rng = np.random.default_rng(0)
    shadows, n = 8, 400
    inside = halves(shadows, n, seed=1)
    mu = rng.normal(0.0, 1.0, n)  # per-example difficulty: LiRA's per-example means remove it
    phi = mu + 3.0 * inside + rng.normal(0.0, 0.5, (shadows, n))
    trained = mu + 3.0 + rng.normal(0.0, 0.5, n)  # a model that trained on every example
    untrained = mu + rng.normal(0.0, 0.5, n)  # one that trained on none
    pos, neg = slice(0, 200), slice(200, 400)
    seen = lira_scores(np.r_[trained[pos], untrained[neg]], phi, inside)
    assert attack_summary(seen[pos], seen[neg])["auc"] > 0.99
    assert attack_summary(seen[pos], seen[neg])["tpr"] > 0.9
    unseen = lira_scores(untrained, phi, inside)
    assert 0.4 < attack_summary(unseen[pos], unseen[neg])["auc"] < 0.6


def test_halves_put_every_example_inside_exactly_half_the_shadows_and_refuse_odd_counts():
    inside = halves(6, 1000, seed=0)
    assert (inside.sum(0) == 3).all()
    assert 400 < inside[0].sum() < 600  # each shadow trains on about half of the pool
    with pytest.raises(ValueError, match="even number"):
        halves(3, 10, seed=0)
    with pytest.raises(ValueError, match="with it and without it"):
        lira_scores(np.zeros(2), np.zeros((2, 2)), np.ones((2, 2), dtype=bool))
