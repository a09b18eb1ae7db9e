"""RFA's loss terms on hand-made tensors: what each is zero for, what moves it, and that the
`rows` slices pick Dr and Df out of one [retain; forget] batch."""

import pytest
import torch

from components.unlearning.rfa_loss import (
    forget_residual,
    get_forget_loss,
    logit_mse,
    relative_sq_distance,
    retain_ce,
    retain_residual,
    rfa_objective,
)

torch.manual_seed(0)
LOGITS = torch.randn(6, 4)  # a batch of 6: rows 0-3 retain, rows 4-5 forget
TAPS = {"a": torch.randn(6, 3, 2, 2), "b": torch.randn(6, 5)}
RETAIN, FORGET = slice(None, 4), slice(4, None)


def test_retain_residual_is_zero_when_the_student_equals_the_teacher_on_dr_only():
    teacher_logits, teacher_taps = LOGITS[RETAIN], {t: f[RETAIN] for t, f in TAPS.items()}
    assert retain_residual(LOGITS, teacher_logits, TAPS, teacher_taps, RETAIN).item() == 0.0
    # The forget rows may differ freely: L_r never reads them.
    moved = LOGITS.clone()
    moved[FORGET] += 10.0
    assert retain_residual(moved, teacher_logits, TAPS, teacher_taps, RETAIN).item() == 0.0
    # A change on Dr at one tap counts, scale-free: doubling a tap adds ||f||^2/||f||^2 = 1.
    doubled = {**TAPS, "b": TAPS["b"] * 2}
    loss = retain_residual(LOGITS, teacher_logits, doubled, teacher_taps, RETAIN)
    assert loss.item() == pytest.approx(1.0, rel=1e-5)


def test_forget_residual_pulls_logits_and_only_the_taps_the_target_defines():
    target_logits = LOGITS[FORGET].clone()
    pooled_b = TAPS["b"][FORGET]  # (2, 5): pooled of a 2-D tap is itself
    # Logits on target, the one defined tap on target: zero whatever tap "a" holds.
    loss = forget_residual(logit_mse, LOGITS, target_logits, TAPS, {"b": pooled_b}, 3.0, FORGET)
    assert loss.item() == 0.0
    # feature_weight scales the tap term: off target by the tap itself gives 1 per unit weight.
    off = {"b": torch.zeros_like(pooled_b) + 1e-3}
    w1 = forget_residual(logit_mse, LOGITS, target_logits, TAPS, off, 1.0, FORGET)
    w3 = forget_residual(logit_mse, LOGITS, target_logits, TAPS, off, 3.0, FORGET)
    assert w3.item() == pytest.approx(3 * w1.item(), rel=1e-5)
    # Sample targets define no tap: only the logit term remains.
    edited = target_logits.clone()
    edited[0, 1] += 2.0
    only = forget_residual(logit_mse, LOGITS, edited, TAPS, {}, 5.0, FORGET)
    assert only.item() == pytest.approx(4.0 / 2)  # one logit off by 2, mean over 2 samples


def test_relative_distance_is_per_sample_and_scale_free():
    g = torch.randn(3, 7)
    assert relative_sq_distance(2 * g, g).item() == pytest.approx(1.0, rel=1e-5)
    assert relative_sq_distance(1000 * 2 * g, 1000 * g).item() == pytest.approx(1.0, rel=1e-5)


def test_objective_and_the_optional_retain_ce():
    lr, lf = torch.tensor(2.0), torch.tensor(3.0)
    assert rfa_objective(lr, lf, 0.5).item() == 3.5
    labels = torch.tensor([0, 1, 2, 3])
    base = torch.tensor(1.0)
    assert retain_ce(LOGITS[RETAIN], labels, 0.0, base) is base  # weight 0: no extra graph node
    ce = torch.nn.functional.cross_entropy(LOGITS[RETAIN], labels)
    assert retain_ce(LOGITS[RETAIN], labels, 2.0, base).item() == pytest.approx(1 + 2 * ce.item())


def test_the_gradient_of_l_r_reaches_only_the_retain_rows():
    student = LOGITS.clone().requires_grad_(True)
    loss = retain_residual(student, LOGITS[RETAIN] + 1.0, {}, {}, RETAIN)
    loss.backward()
    assert student.grad[RETAIN].abs().sum() > 0 and student.grad[FORGET].abs().sum() == 0


def test_an_unknown_forget_loss_names_the_choices():
    with pytest.raises(
        ValueError, match=r"unknown forget loss 'l1'; choose one of \['kl', 'logit_mse'\]"
    ):
        get_forget_loss("l1")
