"""Residual Feature Alignment with LoRA (method.md 1.2): prepare -> loop -> finish.

`prepare` builds everything the loop reads once (teacher and LoRA student, inputs, the teacher's
view of the data, the forget target, the optional adversarial probe, the schedule and the stop
rule); `loop` runs the steps; `finish` merges the adapter into a plain model. The loss terms are
in rfa_loss.py, the targets in targets.py, the stop rule in stopping.py.

The student runs in eval mode throughout (frozen BN statistics); only LoRA weights train. Steps
scale with |Df|: `forget_epochs` passes over Df, within [`min_steps`, `max_steps`]. On models with
a frozen prefix (no adapter below a stage) and `retain_pool` > 0, the prefix runs once per image
and retain batches come from that pool (components/unlearning/lora.frozen_split).

Random draws come from one generator in a fixed order (retain pool, retain reference, forget
order, then per step the forget batch and the retain batch), so a seed fixes the run.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace

import torch
from torch import nn

from components.models import to_input
from components.runtime import (
    DevicePolicy,
    ProgressFn,
    no_progress,
    precision_policy,
    resolve_device,
    set_seed,
)
from components.settings import LoraSettings, RfaSettings, ScenarioSettings
from components.unlearning.adversary import Adversary, warm_adversary
from components.unlearning.batches import forget_batches
from components.unlearning.guard import RetainGuard, spaced_subset, trainable_state
from components.unlearning.lora import adapter_state, attach_lora, frozen_split, trainable_fraction
from components.unlearning.parallel import Shard, current_shard
from components.unlearning.rfa_loss import (
    ForgetLoss,
    forget_residual,
    get_forget_loss,
    retain_ce,
    retain_residual,
    rfa_objective,
)
from components.unlearning.stopping import StopRule
from components.unlearning.taps import feature_taps, logits_and_taps, pooled, prefix_pass
from components.unlearning.targets import (
    NEEDS_HELDOUT,
    NEEDS_RETAIN_REFERENCE,
    TeacherView,
    get_target,
    target_divergence,
)
from components.unlearning.types import UnlearnResult, UnlearnTask

Run = Callable[[torch.Tensor], torch.Tensor]


@dataclass
class Inputs:
    """Df, Dr (or its pool) and heldout on the device, as the forward functions take them: images,
    or cached prefix activations when the model has a frozen prefix (then run_* is the suffix)."""

    xf: torch.Tensor  # (Nf, ...)
    yf: torch.Tensor  # (Nf,)
    xr: torch.Tensor  # (Nr, ...)
    yr: torch.Tensor  # (Nr,)
    run_t: Run
    run_s: Run
    t_prefix: Run | None = None
    xh: torch.Tensor | None = None  # (Nh, ...) only when the target is refreshed from the student


@dataclass
class RfaRun:
    """Everything the loop reads, built once by `prepare`."""

    task: UnlearnTask
    cfg: RfaSettings
    sc: ScenarioSettings
    device: torch.device
    policy: DevicePolicy
    gen: torch.Generator
    teacher: nn.Module
    student: nn.Module
    data: Inputs
    view: TeacherView
    target_logits: torch.Tensor  # (Nf, K) on the device
    target_feats: dict[str, torch.Tensor]  # tap -> (Nf, C) on the device
    adversary: Adversary | None
    forget_loss: ForgetLoss
    opt: torch.optim.Optimizer
    sched: torch.optim.lr_scheduler.LRScheduler
    steps: int
    check: torch.Tensor  # indices of the fixed forget subset the stop rule scores
    stop: StopRule
    batches: Iterator[torch.Tensor]
    guard: RetainGuard | None = None
    shard: Shard = Shard()  # data-parallel: this process's share of each batch (parallel.py)
    history: list[dict[str, float]] = field(default_factory=list)


def rfa(
    original: nn.Module,
    task: UnlearnTask,
    lora: LoraSettings,
    cfg: RfaSettings,
    progress: ProgressFn = no_progress,
) -> UnlearnResult:
    """Unlearn `task` from `original` (left untouched) with a LoRA adapter trained by RFA."""
    t0 = time.perf_counter()
    run = prepare(original, task, lora, cfg)
    done, reason = loop(run, progress)
    return finish(run, done, reason, t0)


def prepare(original: nn.Module, task: UnlearnTask, lora: LoraSettings, cfg: RfaSettings) -> RfaRun:
    """Teacher, student, inputs, target, probe, optimiser, schedule and stop rule."""
    sc = cfg.scenario(task.scenario)
    forget_loss = get_forget_loss(sc.forget_loss)  # before any work: a misspelt name fails at once
    shard = current_shard()
    shard.check(forget_batch=sc.forget_batch, retain_batch=cfg.retain_batch)
    if shard.world > 1 and sc.probe_weight > 0:
        raise ValueError("the adversarial probe (probe_weight > 0) runs in one process only")
    device = resolve_device(cfg.device)
    gen = set_seed(cfg.seed)
    policy = precision_policy(device, cfg.precision)  # auto: CUDA bf16 autocast, CPU fp32
    teacher = policy.prepare(copy.deepcopy(original).to(device)).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    student = policy.prepare(attach_lora(copy.deepcopy(original), lora).to(device))
    student.eval()  # BN running statistics stay frozen: features cannot drift through them
    data = _inputs(task, teacher, student, cfg, policy, device, gen)
    view = _teacher_view(task, teacher, data, cfg, sc, policy, device, gen)
    target = get_target(sc.target)(view)
    adversary = warm_adversary(view, cfg.taps[-1], device, sc) if sc.probe_weight > 0 else None
    opt = torch.optim.Adam([p for p in student.parameters() if p.requires_grad], lr=sc.lr)
    nf = len(data.yf)
    steps = min(
        cfg.max_steps, max(cfg.min_steps, sc.forget_epochs * math.ceil(nf / sc.forget_batch))
    )
    perm = torch.randperm(nf, generator=gen)
    # A fixed subset, not the running batch accuracy, which is too noisy to stop on (method.md 6).
    check = perm[: min(nf, 256)].to(device)
    t_logits = target.logits.to(device)
    check_target = 100.0 * (t_logits[check].argmax(1) == data.yf[check]).float().mean().item()
    focus = target_divergence(view.forget_logits, target.logits) if sc.forget_focus > 0 else None
    return RfaRun(
        task=task, cfg=cfg, sc=sc, device=device, policy=policy, gen=gen,
        teacher=teacher, student=student, data=data, view=view,
        target_logits=t_logits,
        target_feats={k: v.to(device) for k, v in target.features.items()},
        adversary=adversary, forget_loss=forget_loss, opt=opt,
        sched=torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps), steps=steps,
        check=check,
        stop=StopRule(cfg.stop_check_every, cfg.min_steps, cfg.stop_tolerance_pt,
                      cfg.stop_patience, check_target),
        # The batch draws start from the same `perm`; the generator draws nothing until asked.
        batches=forget_batches(perm, sc.forget_batch, gen, focus, sc.forget_focus),
        guard=_guard(cfg, student, data, policy, device), shard=shard,
    )  # fmt: skip


def _guard(
    cfg: RfaSettings, student: nn.Module, data: Inputs, policy: DevicePolicy, device: torch.device
) -> RetainGuard | None:
    """The retain guard with the teacher's accuracy on its fixed Dr subset, or None when off."""
    if cfg.retain_guard_pt is None:
        return None
    idx = spaced_subset(len(data.yr), cfg.retain_guard_size, device)
    return RetainGuard(
        idx=idx, teacher_acc=_accuracy(data.run_t, data.xr[idx], data.yr[idx], policy, device),
        drop_pt=cfg.retain_guard_pt, every=cfg.retain_guard_every,
        last_good=trainable_state(student),
    )  # fmt: skip


def _inputs(
    task: UnlearnTask,
    teacher: nn.Module,
    student: nn.Module,
    cfg: RfaSettings,
    policy: DevicePolicy,
    device: torch.device,
    gen: torch.Generator,
) -> Inputs:
    """Df and Dr on the device; with a frozen prefix, a retain pool and both as prefix outputs."""
    xf = policy.layout(to_input(task.forget.x).to(device))
    yf = torch.from_numpy(task.forget.y).to(device)
    retain = task.retain
    split = frozen_split(student) if cfg.retain_pool else None
    if split is not None:  # only the pool is ever read: convert and move that, not all of Dr
        retain = retain.take(torch.randperm(len(retain), generator=gen)[: cfg.retain_pool].numpy())
    xr = policy.layout(to_input(retain.x).to(device))
    yr = torch.from_numpy(retain.y).to(device)
    if split is None:
        return Inputs(xf, yf, xr, yr, teacher, student)
    # The layers below every adapter are frozen, so their output is a pure function of the
    # image: compute it once for Df and the retain pool, then every pass runs the rest only.
    t_prefix, run_t = frozen_split(teacher)
    xr = prefix_pass(t_prefix, xr, policy, device)
    xf = prefix_pass(t_prefix, xf, policy, device)
    return Inputs(xf, yf, xr, yr, run_t, split[1], t_prefix)


def _teacher_view(
    task: UnlearnTask,
    teacher: nn.Module,
    data: Inputs,
    cfg: RfaSettings,
    sc: ScenarioSettings,
    policy: DevicePolicy,
    device: torch.device,
    gen: torch.Generator,
) -> TeacherView:
    """One no-grad teacher pass over Df, a retain subsample and (sample targets) heldout.

    Sets `data.xh` when the target is refreshed from the student later.
    """
    taps = tuple(cfg.taps)
    ref_idx = torch.randperm(len(data.yr), generator=gen)[: min(len(data.yr), 4000)].to(device)
    if sc.target not in NEEDS_RETAIN_REFERENCE and sc.probe_weight == 0:
        # Nothing reads the retain reference: skip its pass, but keep the index draw above so
        # the later draws (batches, the check subset) do not depend on the target chosen.
        ref_idx = ref_idx[:0]
    # In the run's precision, as its steps (logits_and_taps autocasts; the view is fp32).
    f_logits, f_pooled = logits_and_taps(teacher, data.xf, taps, policy, device, data.run_t)
    r_logits, r_pooled = logits_and_taps(
        teacher, data.xr[ref_idx], taps, policy, device, data.run_t
    )
    yf = data.yf.cpu()
    h_logits, h_labels = f_logits[:0], yf[:0]  # class targets never read the non-member reference
    if sc.target in NEEDS_HELDOUT:
        xh = to_input(task.heldout.x).to(device)
        h_logits = logits_and_taps(teacher, xh, (), policy, device)[0]
        h_labels = torch.from_numpy(task.heldout.y)
        if sc.target_refresh:  # the student re-reads heldout: give it Df's (prefix) input form
            xh = policy.layout(xh)
            data.xh = (
                prefix_pass(data.t_prefix, xh, policy, device) if data.t_prefix is not None else xh
            )
    return TeacherView(
        f_logits, f_pooled, yf, r_logits, data.yr[ref_idx].cpu(), r_pooled, h_logits, h_labels,
        task.forget_classes,
    )  # fmt: skip


def loop(run: RfaRun, progress: ProgressFn = no_progress) -> tuple[int, str]:
    """Train until the schedule ends or the stop rule fires: (steps done, why it stopped)."""
    taps = tuple(run.cfg.taps)
    with (
        feature_taps(run.student, taps) as s_store,
        feature_taps(run.teacher, taps) as t_store,
    ):
        for step in range(1, run.steps + 1):
            rec = _step(run, s_store, t_store)
            if run.data.xh is not None and step % run.sc.target_refresh == 0 and step < run.steps:
                _refresh_target(run)
            if step % 10 == 0 or step == run.steps:  # .item() only here: it waits for the device
                rec = run.shard.mean(rec)  # several processes: the global batch's loss terms
                run.history.append({"step": float(step), **{k: float(v) for k, v in rec.items()}})
                progress(step, run.steps, run.history[-1])
            reason = None
            if run.stop.due(step):
                acc = _check_accuracy(run)
                run.history.append(
                    {"step": float(step), "check_acc": acc, "check_target": run.stop.target_acc}
                )
                reason = run.stop.observe(acc)
            last = step == run.steps
            if run.guard is not None:
                reason = _guard_step(run, step, reason, last)
            if reason or last:
                return step, reason or "steps"
    raise AssertionError("unreachable: steps >= 1 and the last step returns")


def _guard_step(run: RfaRun, step: int, reason: str | None, last: bool) -> str | None:
    """The guard at `step`: scored where the run would end, its adapter held at a periodic check
    (scored only if the run ends below the floor); the stop reason as it stands after."""
    assert run.guard is not None
    if reason or last:
        return _guard_check(run, step, reason, last)
    if run.guard.due(step):
        run.guard.hold(step, run.student)
    return reason


def _guard_check(run: RfaRun, step: int, reason: str | None, last: bool) -> str | None:
    """Score the guard's Dr subset where the run would end. Below the floor an early stop waits
    (RFA's dips on Dr recover, and the stop rule fires again at a later check); at the last step
    the latest passing adapter is put back, the held checks scored newest first to find it."""
    g = run.guard
    assert g is not None
    acc = _guard_accuracy(run)
    passed = g.observe(step, acc, run.student)
    rec = _guard_record(step, acc, g.floor)
    if not passed and last:
        for held, held_acc in g.restore(run.student, lambda: _guard_accuracy(run)):
            run.history.append(_guard_record(held, held_acc, g.floor))
        rec["guard_restored_to"] = float(g.last_good_step)
    run.history.append(rec)
    if passed:
        return reason
    return "retain_guard" if last else None


def _guard_record(step: int, acc: float, floor: float) -> dict[str, float]:
    """A scored check's line in the run's history."""
    return {"step": float(step), "guard_acc": acc, "guard_floor": floor}


def _guard_accuracy(run: RfaRun) -> float:
    """The student's accuracy (percent) on the guard's fixed Dr subset."""
    g, d = run.guard, run.data
    assert g is not None
    return _accuracy(d.run_s, d.xr[g.idx], d.yr[g.idx], run.policy, run.device)


def _step(
    run: RfaRun, s_store: dict[str, torch.Tensor], t_store: dict[str, torch.Tensor]
) -> dict[str, torch.Tensor | float]:
    """One optimiser step on a forget batch and a retain batch; its loss terms (unsynced)."""
    d, sc, device = run.data, run.sc, run.device
    # Every process draws the same global batch, then keeps its share (one process: all of it).
    fi = run.shard.take(next(run.batches)).to(device)
    ri = run.shard.take(torch.randint(len(d.yr), (run.cfg.retain_batch,), generator=run.gen))
    ri = ri.to(device)
    nb = len(ri)
    with torch.no_grad(), run.policy.autocast(device):
        t_out = d.run_t(d.xr[ri]).float()
        t_taps = {t: t_store[t].float() for t in run.cfg.taps}
    # One student pass over [retain; forget]: eval-mode BN does not mix the two halves. The
    # losses are computed in fp32 whatever precision the forward ran in.
    with run.policy.autocast(device):
        s_out = d.run_s(torch.cat([d.xr[ri], d.xf[fi]])).float()
    s_taps = {t: s_store[t].float() for t in run.cfg.taps}
    retain, forget = slice(None, nb), slice(nb, None)
    loss_r = retain_residual(s_out, t_out, s_taps, t_taps, retain)
    t_feats = {t: tf[fi] for t, tf in run.target_feats.items()}
    loss_f = forget_residual(
        run.forget_loss, s_out, run.target_logits[fi], s_taps, t_feats, sc.feature_weight, forget
    )
    rec: dict[str, torch.Tensor | float] = {}
    if run.adversary is not None:  # the probe learns the current features, then Df is pushed away
        feats = pooled(s_taps[run.cfg.taps[-1]])  # (nb + bf, C): the stage the head pools
        labels = torch.cat([d.yr[ri], d.yf[fi]])
        fit, loss_p = run.adversary.penalty(
            feats, labels, nb, run.task.forget_classes, sc.probe_steps
        )
        loss_f = loss_f + sc.probe_weight * loss_p
        rec = {"probe_fit": fit, "probe_penalty": loss_p.detach()}
    loss = rfa_objective(loss_r, loss_f, sc.forget_weight)
    loss = retain_ce(s_out[:nb], d.yr[ri], sc.retain_ce_weight, loss)
    run.opt.zero_grad(set_to_none=True)
    loss.backward()
    run.shard.average_grads([p for g in run.opt.param_groups for p in g["params"]])
    run.opt.step()
    run.sched.step()
    return {"loss_retain": loss_r.detach(), "loss_forget": loss_f.detach(), **rec}


def _refresh_target(run: RfaRun) -> None:
    """Re-aim Df at the non-members of the model as it is now (settings.target_refresh)."""
    d = run.data
    logits = logits_and_taps(run.student, d.xh, (), run.policy, run.device, d.run_s)[0]
    run.view = replace(run.view, heldout_logits=logits)
    run.target_logits = get_target(run.sc.target)(run.view).logits.to(run.device)


def _check_accuracy(run: RfaRun) -> float:
    """The student's accuracy (percent) on the fixed forget subset."""
    d, check = run.data, run.check
    return _accuracy(d.run_s, d.xf[check], d.yf[check], run.policy, run.device)


def _accuracy(
    net: Run, x: torch.Tensor, y: torch.Tensor, policy: DevicePolicy, device: torch.device
) -> float:
    """Accuracy (percent) of `net` on (x, y) in one pass: the check subsets are a few hundred."""
    with torch.no_grad(), policy.autocast(device):
        return 100.0 * (net(x).argmax(1) == y).float().mean().item()


def finish(run: RfaRun, done: int, reason: str, t0: float) -> UnlearnResult:
    """Merge the adapter into a plain CPU model; keep the adapter itself for the audit."""
    adapter = adapter_state(run.student)
    share = trainable_fraction(run.student)
    merged = run.student.merge_and_unload().to("cpu").to(memory_format=torch.contiguous_format)
    return UnlearnResult(
        model=merged.eval(), adapter=adapter, seconds=time.perf_counter() - t0,
        trainable_fraction=share, steps=done, device=str(run.device), history=run.history,
        stop_reason=reason,
    )  # fmt: skip
