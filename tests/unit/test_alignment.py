import torch

from components.unlearning.batches import forget_batches
from components.unlearning.rfa_loss import (
    get_forget_loss,
    logit_mse,
    relative_sq_distance,
    target_kl,
)
from components.unlearning.taps import feature_taps
from components.unlearning.targets import (
    TeacherView,
    margin_quantile,
    margins,
    masked_nearest_class,
    target_divergence,
)


def test_relative_distance_zero_iff_equal_and_scale_free():
    g = torch.randn(4, 3, 5, 5)
    assert relative_sq_distance(g, g).item() == 0.0
    assert relative_sq_distance(g * 1.1, g).item() > 0
    assert (
        abs(
            relative_sq_distance(10 * g * 1.1, 10 * g).item()
            - relative_sq_distance(g * 1.1, g).item()
        )
        < 1e-5
    )


def test_margins():
    z = torch.tensor([[3.0, 1.0, 0.0], [0.0, 2.0, 5.0]])
    assert margins(z, torch.tensor([0, 1])).tolist() == [2.0, -3.0]


def _view(forget_logits, forget_labels, heldout_logits=None, heldout_labels=None, classes=(0,)):
    k = forget_logits.shape[1]
    r_labels = torch.arange(40) % k
    f_pooled = {"tap": torch.nn.functional.one_hot(forget_labels, k).float()}
    return TeacherView(
        forget_logits,
        f_pooled,
        forget_labels,
        torch.randn(40, k),
        r_labels,
        {"tap": torch.nn.functional.one_hot(r_labels, k).float()},
        heldout_logits if heldout_logits is not None else torch.randn(40, k),
        heldout_labels if heldout_labels is not None else r_labels,
        classes,
    )


def test_masked_nearest_class_pushes_forgotten_class_below_all_and_maps_features():
    z = torch.tensor([[5.0, 1.0, 3.0], [4.0, 2.0, 0.0]])
    t = masked_nearest_class(_view(z, torch.tensor([0, 0])))
    assert (t.logits.argmax(1) == torch.tensor([2, 1])).all()
    assert (t.logits[:, 0] < t.logits[:, 1:].min(1).values).all()
    # Retained logits are the teacher's; features are the retain mean of the next class.
    assert torch.equal(t.logits[:, 1:], z[:, 1:])
    assert torch.equal(t.features["tap"], torch.eye(3)[[2, 1]])


def test_margin_quantile_gives_forget_set_the_nonmember_margin_distribution():
    torch.manual_seed(0)
    n = 50
    labels = torch.zeros(n, dtype=torch.long)
    forget = torch.zeros(n, 3)
    forget[:, 0] = torch.linspace(8, 12, n)  # confident members: margins 8..12
    held_m = torch.linspace(-1, 5, 101)  # non-members: margins -1..5, ~1/6 negative
    held = torch.zeros(101, 3)
    held[:, 0] = held_m
    t = margin_quantile(_view(forget, labels, held, torch.zeros(101, dtype=torch.long)))
    new_m = margins(t.logits, labels)
    assert torch.allclose(
        new_m.sort().values, torch.quantile(held_m, (torch.arange(n) + 0.5) / n), atol=1e-5
    )
    assert (new_m.argsort() == margins(forget, labels).argsort()).all()  # rank preserved
    assert abs((new_m < 0).float().mean().item() - (held_m < 0).float().mean().item()) < 0.03
    assert torch.equal(t.logits[:, 1:], forget[:, 1:])  # only the true-class logit is edited


def test_feature_taps_record_and_detach_hooks():
    model = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.ReLU(), torch.nn.Linear(4, 2))
    with feature_taps(model, ("0", "2")) as store:
        out = model(torch.randn(5, 3))
        assert store["0"].shape == (5, 4) and torch.equal(store["2"], out)
    assert all(not m._forward_hooks for m in model.modules())


def test_masked_nearest_neighbour_targets_the_closest_retained_sample_features():
    from components.unlearning.targets import masked_nearest_neighbour

    z = torch.tensor([[5.0, 1.0, 3.0], [4.0, 2.0, 0.0]])
    r_feats = torch.tensor([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [0.9, 0.1]])
    r_labels = torch.tensor([0, 1, 2, 2])
    view = TeacherView(
        z,
        {"tap": torch.tensor([[1.0, 0.05], [0.1, 0.0]])},
        torch.tensor([0, 0]),
        torch.randn(4, 3),
        r_labels,
        {"tap": r_feats},
        torch.randn(4, 3),
        r_labels,
        (0,),
    )
    t = masked_nearest_neighbour(view)
    assert t.logits.argmax(1).tolist() == [2, 1]  # logits as masked_nearest_class
    # [1, .05] is nearest to retained [1, 0]; [.1, 0] would be nearest to [0, 0], but that one is of
    # the forgotten class, so it goes to the closest point of a retained class.
    assert torch.equal(t.features["tap"][0], r_feats[1])
    d = torch.cdist(torch.tensor([[0.1, 0.0]]), r_feats[1:]).flatten()
    assert torch.equal(t.features["tap"][1], r_feats[1:][d.argmin()])


def test_kl_forget_loss_weighs_the_flips_that_squared_logit_error_drowns():
    """Sample targets cut big margins (20 -> 10: both predict with probability ~1) and flip a few
    (1 -> -1). Squared logit error is dominated by the cuts; KL to the target's softmax sees only
    the flip, which is what accuracy and the attacks read."""

    def logits(m):  # true class 0 at margin m over two other classes
        return torch.tensor([[m, 0.0, 0.0]])

    cut_s, cut_t = logits(20.0), logits(10.0)
    flip_s, flip_t = logits(1.0), logits(-1.0)
    assert logit_mse(cut_s, cut_t) > 10 * logit_mse(flip_s, flip_t)
    assert target_kl(flip_s, flip_t) > 100 * target_kl(cut_s, cut_t)
    both_s, both_t = torch.cat([cut_s, flip_s]), torch.cat([cut_t, flip_t])
    for loss in (logit_mse, target_kl):
        assert loss(both_t, both_t).abs().item() < 1e-6  # zero at the target
    # Gradient direction: KL lowers the flipped sample's true logit, and barely touches the cut one.
    s = both_s.clone().requires_grad_(True)
    target_kl(s, both_t).backward()
    assert s.grad[1, 0] > 0 and abs(s.grad[0, 0].item()) < 1e-3


def test_unknown_forget_loss_names_the_choices():
    import pytest

    with pytest.raises(
        ValueError, match=r"unknown forget loss 'l2'; choose one of \['kl', 'logit_mse'\]"
    ):
        get_forget_loss("l2")


def test_target_divergence_is_zero_where_the_target_keeps_the_teacher_and_largest_at_a_flip():
    teacher = torch.tensor([[4.0, 0.0, 0.0], [0.3, 0.0, -2.0], [9.0, 0.0, 0.0]])
    target = teacher.clone()
    target[1, 0] = -0.3  # a flip near the boundary: a real change of prediction
    target[2, 0] = 7.0  # a saturated margin cut: probability ~1 either way
    d = target_divergence(teacher, target)
    assert d[0].item() == 0.0
    assert d[1] > 10 * d[2] > 0


def _take(gen_batches, k):
    return [next(gen_batches).tolist() for _ in range(k)]


def test_forget_batches_without_focus_are_plain_passes_and_weights_change_nothing():
    perm = torch.randperm(10, generator=torch.Generator().manual_seed(0))
    plain = _take(forget_batches(perm, 4, torch.Generator().manual_seed(1)), 3)
    assert plain[0] == perm[:4].tolist() and plain[1] == perm[4:8].tolist()
    assert sorted(plain[0] + plain[1]) == sorted(
        set(plain[0] + plain[1])
    )  # no repeat within a pass
    weighted = _take(
        forget_batches(perm, 4, torch.Generator().manual_seed(1), torch.rand(10), 0.0), 3
    )
    assert weighted == plain  # focus 0 draws what plain passes draw: earlier runs reproduce


def test_forget_batches_focus_share_follows_the_weights():
    perm = torch.arange(10)
    w = torch.zeros(10)
    w[7] = 1.0
    half = _take(forget_batches(perm, 4, torch.Generator().manual_seed(0), w, 0.5), 5)
    for b in half:
        assert len(b) == 4 and b[2:] == [7, 7]  # the focused half: only the sample the target moves
    assert [b[:2] for b in half[:5]] == [[0, 1], [2, 3], [4, 5], [6, 7], [8, 9]]  # the rest: a pass
    full = _take(forget_batches(perm, 4, torch.Generator().manual_seed(0), w, 1.0), 3)
    assert full == [[7, 7, 7, 7]] * 3
    # A target that moves nothing (all weights 0) falls back to uniform draws instead of failing.
    flat = _take(
        forget_batches(perm, 4, torch.Generator().manual_seed(0), torch.zeros(10), 1.0), 20
    )
    assert len({i for b in flat for i in b}) > 5
