import numpy as np

from components.metrics import (
    Predictions,
    accuracy,
    auc_standard_error,
    confidence,
    entropy,
    loss_mia,
    mia_efficacy,
    modified_entropy,
    rate_standard_error,
    retain_leakage,
    two_rate_standard_error,
)


def _preds(conf_true, n_classes=3, seed=0):
    """Predictions whose true class (0) has the given softmax probability, rest split evenly."""
    conf_true = np.asarray(conf_true, dtype=float)
    p = np.tile((1 - conf_true)[:, None] / (n_classes - 1), (1, n_classes))
    p[:, 0] = conf_true
    return Predictions(np.log(p), np.zeros(len(conf_true), dtype=np.int64))


def test_accuracy_and_confidence():
    p = _preds([0.9, 0.2, 0.6])
    assert abs(accuracy(p) - 200 / 3) < 1e-9
    assert np.allclose(confidence(p), [0.9, 0.2, 0.6])


def test_modified_entropy_matches_song_mittal_formula():
    p = _preds([0.7])
    q = p.probs[0]
    expected = -(1 - q[0]) * np.log(q[0]) - q[1] * np.log(1 - q[1]) - q[2] * np.log(1 - q[2])
    assert np.isclose(modified_entropy(p)[0], expected)
    # Unlike entropy it separates a confident right answer from a confident wrong one.
    right, wrong = (
        _preds([0.98]),
        Predictions(np.log(np.array([[0.01, 0.98, 0.01]])), np.array([0])),
    )
    assert np.isclose(entropy(right), entropy(wrong))
    assert modified_entropy(wrong)[0] > 10 * modified_entropy(right)[0]


def test_mia_efficacy_separates_member_like_from_nonmember_like():
    rng = np.random.default_rng(0)
    retain = _preds(rng.uniform(0.97, 1.0, 300))
    test = _preds(rng.uniform(0.3, 0.9, 200))
    out = mia_efficacy(
        retain,
        test,
        {
            "memberish": _preds(rng.uniform(0.97, 1.0, 50)),
            "forgotten": _preds(rng.uniform(0.0, 0.3, 50)),
        },
    )
    assert out["memberish"] < 10 and out["forgotten"] > 90


def test_mia_efficacy_attack_is_balanced_when_fewer_members_are_evaluated():
    """Members and non-members drawn alike: a fair attack calls about half of anything non-member.
    Trained on 100 members against 1,000 non-members, an unbalanced SVC called nearly all so."""
    rng = np.random.default_rng(3)
    retain, test = _preds(rng.uniform(0.5, 1.0, 100)), _preds(rng.uniform(0.5, 1.0, 1000))
    out = mia_efficacy(retain, test, {"alike": _preds(rng.uniform(0.5, 1.0, 2000))})
    assert 20 < out["alike"] < 80


def test_loss_mia_auc_is_chance_for_same_distribution_and_high_when_separable():
    rng = np.random.default_rng(1)
    same = loss_mia(_preds(rng.uniform(0.5, 0.9, 200)), _preds(rng.uniform(0.5, 0.9, 200)), seed=0)
    assert abs(same["auc"] - 0.5) < 0.1
    sep = loss_mia(_preds(rng.uniform(0.98, 1.0, 200)), _preds(rng.uniform(0.3, 0.6, 200)), seed=0)
    assert sep["auc"] > 0.95 and sep["acc"] > 0.9


def test_retain_leakage_near_chance_without_signal():
    rng = np.random.default_rng(2)
    v = retain_leakage(_preds(rng.uniform(0.5, 1.0, 400)), _preds(rng.uniform(0.5, 1.0, 400)))
    assert 40 < v < 60


def test_standard_errors_shrink_with_n_and_never_vanish():
    assert rate_standard_error(0.0, 10) > 0
    assert rate_standard_error(50.0, 1000) < rate_standard_error(50.0, 10)
    assert auc_standard_error(0.5, 1000, 1000) < auc_standard_error(0.5, 30, 30)
    assert two_rate_standard_error(0.0, 40, 10.0, 300) > 3.0


def test_predict_many_shares_an_identical_prefix_and_matches_predict():
    import copy

    import torch

    from components.data import Split
    from components.metrics import predict, predict_many, shared_prefix
    from components.resnet_cifar import ResNetCifar

    torch.manual_seed(0)
    a = ResNetCifar(3).eval()
    b = copy.deepcopy(a)
    with torch.no_grad():
        b.layer3[0].conv1.weight.mul_(1.5)  # what LoRA changes: only the suffix
    split = Split(
        np.random.default_rng(0).integers(0, 255, (10, 3, 32, 32), dtype=np.uint8),
        np.arange(10) % 10,
        np.array([f"s{i}" for i in range(10)]),
    )
    assert shared_prefix([a, b]) is not None
    pa, pb = predict_many([a, b], split, torch.device("cpu"), batch=4)
    assert np.array_equal(pa.logits, predict(a, split, torch.device("cpu"), batch=4).logits)
    assert np.array_equal(pb.logits, predict(b, split, torch.device("cpu"), batch=4).logits)
    assert not np.array_equal(pa.logits, pb.logits)
    with torch.no_grad():
        b.layer1[0].conv1.weight.mul_(1.5)  # a prefix that differs is not shared
    assert shared_prefix([a, b]) is None
