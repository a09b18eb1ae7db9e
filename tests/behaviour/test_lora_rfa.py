"""LoRA policy and RFA behaviour on real digits (a briefly trained small CNN)."""

import copy

import numpy as np
import pytest
import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save

from components.evaluation import EvalSplits, evaluate
from components.forget import extract_forget_set
from components.models import load_model, model_digest, state_bytes, to_input
from components.settings import EvaluationSettings, LoraSettings, RfaSettings
from components.unlearning.lora import apply_adapter, attach_lora, trainable_fraction
from components.unlearning.registry import get_method
from components.unlearning.rfa import rfa
from components.unlearning.types import MethodConfig, UnlearnTask

CPU = torch.device("cpu")


def _bn_stats(model):
    return {k: v.clone() for k, v in model.state_dict().items() if "running" in k}


def test_lora_starts_as_identity_and_trains_only_adapters(base_model, digits):
    student = attach_lora(copy.deepcopy(base_model), LoraSettings())
    x = to_input(digits.test.x[:64])
    with torch.no_grad():
        assert torch.allclose(student(x), base_model(x), atol=1e-6)  # B = 0 at start
    trainable = [n for n, p in student.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    assert trainable_fraction(student) < 0.06


def _class_task(digits, c=3):
    fs = extract_forget_set(digits.train, set(digits.train.ids[digits.train.y == c].tolist()))
    return fs, UnlearnTask("class", fs.forget, fs.retain, digits.heldout, (c,))


def test_rfa_class_unlearning_forgets_class_keeps_rest_and_freezes_bn(base_model, digits):
    before_bn, before_digest = _bn_stats(base_model), model_digest(base_model)
    fs, task = _class_task(digits)
    result = rfa(base_model, task, LoraSettings(), RfaSettings())
    # The original is untouched and the merged model kept every BatchNorm statistic.
    assert model_digest(base_model) == before_digest
    after_bn = _bn_stats(result.model)
    assert all(torch.equal(before_bn[k], after_bn[k]) for k in before_bn)
    splits = EvalSplits.build(fs.forget, fs.retain, digits.test, (3,), EvaluationSettings())
    o, u = (
        evaluate(base_model, splits, EvaluationSettings(), CPU),
        evaluate(result.model, splits, EvaluationSettings(), CPU),
    )
    assert o["acc_dft"] > 90 and u["acc_dft"] <= 1.0 and u["acc_df"] <= 1.0
    assert u["acc_drt"] >= o["acc_drt"] - 1.0
    assert u["mia_efficacy"] >= 95
    assert 0 < result.trainable_fraction < 0.06 and result.steps >= RfaSettings().min_steps
    h = [x for x in result.history if "loss_forget" in x]  # checks are recorded between them
    assert h[-1]["loss_forget"] < h[0]["loss_forget"]


def test_adapter_save_load_round_trip_reproduces_the_unlearned_model(base_model, digits):
    _, task = _class_task(digits, c=5)
    cfg = RfaSettings(
        min_steps=20,
        max_steps=15,
        class_unlearning={"target": "masked_nearest_class", "forget_epochs": 1},
    )
    result = rfa(base_model, task, LoraSettings(), cfg)
    assert result.steps == 15  # the cap wins over min_steps and |Df|
    restored_state = st_load(st_save(result.adapter))
    rebuilt = apply_adapter(copy.deepcopy(base_model), LoraSettings(), restored_state)
    x = to_input(digits.test.x[:128])
    with torch.no_grad():
        assert torch.allclose(rebuilt(x), result.model(x), atol=1e-5)
    # The served checkpoint itself round-trips through safetensors bytes without pickle.
    spec = {
        "arch": "small_cnn",
        "in_channels": 1,
        "num_classes": 10,
        "width": 32,
        "mean": base_model.norm.mean.flatten().tolist(),
        "std": base_model.norm.std.flatten().tolist(),
    }
    assert model_digest(load_model(spec, state_bytes(result.model))) == model_digest(result.model)


def test_rfa_sample_unlearning_moves_forget_margins_toward_nonmembers(base_model, digits):
    from components.unlearning.targets import margins

    rng = np.random.default_rng(0)
    ids = set(rng.choice(digits.train.ids, size=50, replace=False).tolist())
    fs = extract_forget_set(digits.train, ids)
    result = get_method("rfa")(
        base_model, UnlearnTask("sample", fs.forget, fs.retain, digits.heldout), MethodConfig()
    )

    def quantiles(model, split):
        with torch.no_grad():
            m = margins(model(to_input(split.x)), torch.from_numpy(split.y)).numpy()
        return np.quantile(m, np.linspace(0.05, 0.95, 19))

    # margin_quantile maps Df's margins rank for rank onto heldout's, so the distance between the
    # two distributions' quantiles is what must fall (0.56 -> 0.12 here). One quantile alone (the
    # median) moved by less than the float difference between CPUs and was not a sound check.
    heldout = quantiles(base_model, digits.heldout)
    before = np.abs(quantiles(base_model, fs.forget) - heldout).mean()
    after = np.abs(quantiles(result.model, fs.forget) - heldout).mean()
    assert after < 0.5 * before, (before, after)
    # Dr outputs stay aligned with the teacher (zero residual).
    with torch.no_grad():
        xr = to_input(fs.retain.x[:256])
        assert (result.model(xr).argmax(1) == base_model(xr).argmax(1)).float().mean() > 0.99


def test_sample_rfa_skips_the_unread_retain_reference_pass_without_changing_its_result(
    base_model, digits, monkeypatch
):
    """margin_quantile reads Df and the heldout split only: the teacher must not run over the
    retain reference, and skipping it must leave every random draw, so the adapter, unchanged."""
    from components.unlearning import rfa as methods
    from components.unlearning import targets as alignment

    seen: list[int] = []
    real = methods.logits_and_taps
    monkeypatch.setattr(
        methods,
        "logits_and_taps",
        lambda model, x, *a, **k: (seen.append(len(x)), real(model, x, *a, **k))[1],
    )
    rng = np.random.default_rng(1)
    fs = extract_forget_set(
        digits.train, set(rng.choice(digits.train.ids, size=40, replace=False).tolist())
    )
    task = UnlearnTask("sample", fs.forget, fs.retain, digits.heldout)
    cfg = RfaSettings(max_steps=30, min_steps=30)
    skipped = rfa(base_model, task, LoraSettings(), cfg)
    assert seen == [40, 0, len(digits.heldout)]
    seen.clear()
    monkeypatch.setattr(
        methods, "NEEDS_RETAIN_REFERENCE", alignment.NEEDS_RETAIN_REFERENCE | {"margin_quantile"}
    )
    full = rfa(base_model, task, LoraSettings(), cfg)
    assert seen == [40, min(len(fs.retain), 4000), len(digits.heldout)]
    assert skipped.adapter.keys() == full.adapter.keys()
    assert all(torch.equal(skipped.adapter[k], full.adapter[k]) for k in full.adapter)


def test_target_refresh_rebuilds_the_sample_target_from_the_students_heldout_outputs(
    base_model, digits, monkeypatch
):
    """target_refresh N: every N steps (not at the last) the student, not the teacher, re-reads the
    heldout split and Df is re-aimed at its non-members; 0 builds the target once, as before."""
    from components.settings import ScenarioSettings
    from components.unlearning import rfa as methods

    seen: list[tuple[int, bool]] = []  # (images, pass ran with trainable adapters = the student)
    real = methods.logits_and_taps
    monkeypatch.setattr(
        methods,
        "logits_and_taps",
        lambda model, x, *a, **k: (
            seen.append((len(x), any(p.requires_grad for p in model.parameters()))),
            real(model, x, *a, **k),
        )[1],
    )
    rng = np.random.default_rng(1)
    fs = extract_forget_set(
        digits.train, set(rng.choice(digits.train.ids, size=40, replace=False).tolist())
    )
    task = UnlearnTask("sample", fs.forget, fs.retain, digits.heldout)
    once = RfaSettings(max_steps=30, min_steps=30)
    plain = rfa(base_model, task, LoraSettings(), once)
    assert seen == [(40, False), (0, False), (len(digits.heldout), False)]
    seen.clear()
    sample = once.sample_unlearning.model_dump() | {"target_refresh": 10}
    refreshed = rfa(
        base_model,
        task,
        LoraSettings(),
        once.model_copy(update={"sample_unlearning": ScenarioSettings(**sample)}),
    )
    assert seen[3:] == [(len(digits.heldout), True)] * 2  # steps 10 and 20; none after the last
    assert any(not torch.equal(plain.adapter[k], refreshed.adapter[k]) for k in plain.adapter)


def test_retain_cross_entropy_is_a_per_scenario_setting_that_steers_the_adapter(base_model, digits):
    """CE on Dr belongs to a scenario (CIFAR-10 class unlearning uses it, sample unlearning not):
    set on class_unlearning it changes the class run's adapter; the old rfa-level key is refused."""
    import pydantic

    from components.settings import ScenarioSettings

    _, task = _class_task(digits, c=6)
    base = RfaSettings(min_steps=20, max_steps=20, stop_check_every=0)
    with_ce = base.model_copy(
        update={
            "class_unlearning": ScenarioSettings(
                target="masked_nearest_class", forget_epochs=40, retain_ce_weight=5.0
            )
        }
    )
    a, b = (
        rfa(base_model, task, LoraSettings(), base),
        rfa(base_model, task, LoraSettings(), with_ce),
    )
    assert any(not torch.equal(a.adapter[k], b.adapter[k]) for k in a.adapter)
    with pytest.raises(pydantic.ValidationError, match="retain_ce_weight"):
        RfaSettings.model_validate({"retain_ce_weight": 1.0})


def test_early_stop_ends_once_the_forget_check_reaches_the_target_and_still_forgets(
    base_model, digits
):
    _, task = _class_task(digits, c=3)
    # The stop rule alone (the guard off); the same run with the guard: the next test.
    cfg = RfaSettings(min_steps=20, max_steps=600, stop_check_every=10, stop_tolerance_pt=1.0,
                      retain_guard_pt=None)  # fmt: skip
    result = rfa(base_model, task, LoraSettings(), cfg)
    checks = [h for h in result.history if "check_acc" in h]
    assert (
        20 <= result.steps < 600
        and checks[-1]["step"] == result.steps
        and result.stop_reason == "target"
    )
    assert (
        checks[-1]["check_acc"] <= checks[-1]["check_target"] + 1.0 == 1.0
    )  # class target scores 0 %
    assert all(c["check_acc"] > 1.0 for c in checks[:-1])  # it did not stop before reaching it
    x = to_input(task.forget.x)
    with torch.no_grad():
        assert (result.model(x).argmax(1).numpy() == task.forget.y).mean() <= 0.02


def test_an_early_stop_waits_while_dr_is_below_the_guard_and_ends_forgotten_and_within_it(
    base_model, digits
):
    """The same run with the guard on: it reaches the target in a dip on Dr (at step 20 with
    today's digits base), so it goes on instead of stopping (or restoring an adapter that has not
    forgotten), and stops at the first check where both hold. Without such a dip the test has
    nothing to show and fails at `waited`: the scenario needs a new class or lr then."""
    _, task = _class_task(digits, c=3)
    cfg = RfaSettings(min_steps=20, max_steps=600, stop_check_every=10, stop_tolerance_pt=1.0)
    result = rfa(base_model, task, LoraSettings(), cfg)
    hit = {int(h["step"]) for h in result.history if "check_acc" in h and h["check_acc"] <= 1.0}
    guard = {int(h["step"]): h for h in result.history if "guard_acc" in h}
    waited = [s for s in sorted(hit) if guard[s]["guard_acc"] < guard[s]["guard_floor"]]
    assert waited and result.steps > waited[0]  # a dip at the target: it went on
    assert result.stop_reason == "target" and result.steps in hit
    assert guard[result.steps]["guard_acc"] >= guard[result.steps]["guard_floor"]
    assert all(s in waited for s in hit if s < result.steps)  # it stopped at the first chance
    x = to_input(task.forget.x)
    with torch.no_grad():
        assert (result.model(x).argmax(1).numpy() == task.forget.y).mean() <= 0.02


def test_stall_stop_ends_a_run_that_no_longer_moves_the_forget_set(base_model, digits):
    """An adapter that cannot move Df (here: a learning rate of 1e-9) must not burn its whole step
    budget: after `stop_patience` checks without progress it stops and says so."""
    from components.settings import ScenarioSettings

    stuck = ScenarioSettings(target="masked_nearest_class", lr=1e-9, forget_epochs=40)
    cfg = RfaSettings(
        class_unlearning=stuck,
        min_steps=10,
        max_steps=200,
        stop_check_every=10,
        stop_tolerance_pt=0.5,
        stop_patience=3,
    )
    _, task = _class_task(digits, c=5)
    result = rfa(base_model, task, LoraSettings(), cfg)
    checks = [h for h in result.history if "check_acc" in h]
    assert (
        checks[0]["check_acc"] > 90 and checks[0]["check_target"] == 0.0
    )  # the target is out of reach
    assert (
        result.stop_reason == "stalled" and result.steps == 40
    )  # first check at 10, three stale ones after
    assert [c["step"] for c in checks] == [10, 20, 30, 40]
    off = rfa(
        base_model,
        task,
        LoraSettings(),
        cfg.model_copy(update={"stop_patience": 0, "max_steps": 60}),
    )
    assert off.stop_reason == "steps" and off.steps == 60


def test_forget_loss_is_a_scenario_setting_and_a_misspelt_one_fails_before_any_pass(
    base_model, digits, monkeypatch
):
    """`forget_loss` reaches the training loop (KL and squared logit error train different
    adapters from the same draws); an unknown name stops RFA before the teacher runs at all."""
    from components.settings import ScenarioSettings
    from components.unlearning import rfa as methods

    rng = np.random.default_rng(2)
    fs = extract_forget_set(
        digits.train, set(rng.choice(digits.train.ids, size=40, replace=False).tolist())
    )
    task = UnlearnTask("sample", fs.forget, fs.retain, digits.heldout)

    def cfg(loss: str) -> RfaSettings:
        sc = ScenarioSettings(
            target="margin_quantile",
            forget_loss=loss,
            lr=1e-2,
            forget_weight=10.0,
            feature_weight=0.0,
        )
        return RfaSettings(min_steps=20, max_steps=20, sample_unlearning=sc)

    mse, kl = (
        rfa(base_model, task, LoraSettings(), cfg("logit_mse")),
        rfa(base_model, task, LoraSettings(), cfg("kl")),
    )
    assert any(not torch.equal(mse.adapter[k], kl.adapter[k]) for k in mse.adapter)
    passes: list[int] = []
    monkeypatch.setattr(methods, "logits_and_taps", lambda model, x, *a, **k: passes.append(len(x)))
    with pytest.raises(ValueError, match="unknown forget loss 'l1'"):
        rfa(base_model, task, LoraSettings(), cfg("l1"))
    assert passes == []


def _retain_acc(model, task, idx):
    x, y = to_input(task.retain.x[idx]), task.retain.y[idx]
    with torch.no_grad():
        return 100.0 * (model(x).argmax(1).numpy() == y).mean()


def test_retain_guard_puts_back_the_latest_adapter_within_it_when_a_run_ends_below(
    base_model, digits
):
    """An lr 7x the default wrecks Dr by the end; with the guard on, the run goes on to its end
    (a dip is not a stop), finds itself below the floor and hands back the adapter of the latest
    check that passed, which is within the guard of the teacher on the guard's subset: every
    check after it is scored (newest first, only now) and fails, and it passes."""
    from components.unlearning.guard import spaced_subset

    wild = {"target": "masked_nearest_class", "lr": 0.02, "forget_epochs": 40}
    cfg = RfaSettings(class_unlearning=wild, min_steps=60, max_steps=60, retain_guard_pt=None)
    _, task = _class_task(digits, c=3)
    idx = spaced_subset(len(task.retain.y), 512, CPU).numpy()
    teacher = _retain_acc(base_model, task, idx)
    off = rfa(base_model, task, LoraSettings(), cfg)
    assert off.stop_reason == "steps" and _retain_acc(off.model, task, idx) < teacher - 5
    on = rfa(base_model, task, LoraSettings(),
             cfg.model_copy(update={"retain_guard_pt": 1.0, "retain_guard_every": 2}))  # fmt: skip
    scored = {int(h["step"]): h["guard_acc"] for h in on.history if "guard_acc" in h}
    end = on.history[-1]
    assert on.stop_reason == "retain_guard" and on.steps == 60 == end["step"]  # ran to the end
    back = int(end["guard_restored_to"])
    after = range(back + 2, 61, 2)
    assert set(scored) == {*after, *([back] if back else [])}  # no check before it was scored
    assert all(scored[s] < teacher - 1.0 for s in after)
    assert back == 0 or scored[back] >= teacher - 1.0
    assert _retain_acc(on.model, task, idx) >= teacher - 1.0


def test_retain_guard_that_never_trips_leaves_the_run_bit_for_bit_unchanged(base_model, digits):
    """The guard's subset is spaced, not drawn, and a run that ends above its floor keeps its
    own adapter: such a run equals the run without the guard, dips along the way included. Its
    periodic checks are held, not scored: the end's score is the one the run reads."""
    _, task = _class_task(digits, c=5)
    cfg = RfaSettings(min_steps=30, max_steps=30, retain_guard_pt=None)
    off = rfa(base_model, task, LoraSettings(), cfg)
    on = rfa(base_model, task, LoraSettings(), cfg.model_copy(update={"retain_guard_pt": 1.0}))
    checks = [h for h in on.history if "guard_acc" in h]
    assert on.stop_reason == off.stop_reason == "steps"
    assert [c["step"] for c in checks] == [30] and "guard_restored_to" not in checks[-1]
    assert all(torch.equal(on.adapter[k], off.adapter[k]) for k in off.adapter)
