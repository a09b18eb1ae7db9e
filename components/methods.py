"""Unlearning methods behind one signature, in a registry (`METHODS`).

Every method takes the frozen original model and an `UnlearnTask` and returns an
`UnlearnResult` whose `model` is a plain, merged module ready to serve.
"""

from __future__ import annotations

import copy
import math
import time
from dataclasses import dataclass, replace
from typing import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from components.adversary import FeatureBank, ForgetProbe, fit_probe, recognition_penalty
from components.alignment import (
    NEEDS_HELDOUT,
    NEEDS_RETAIN_REFERENCE,
    TeacherView,
    feature_taps,
    get_forget_loss,
    get_target,
    pooled,
    relative_sq_distance,
    target_divergence,
)
from components.baselines import BASELINES, BaselineSettings
from components.data import Split
from components.lora import adapter_state, attach_lora, frozen_split, trainable_fraction
from components.models import to_input
from components.runtime import ProgressFn, device_policy, no_progress, resolve_device, set_seed
from components.unlearning.types import Scenario, UnlearnResult, UnlearnTask  # noqa: F401 (re-exported)
from components.settings import LoraSettings, RfaSettings, ScenarioSettings, TrainSettings


def _logits_and_taps(
    model: nn.Module,
    x: torch.Tensor,
    taps: tuple[str, ...],
    batch: int,
    run: Callable | None = None,
):
    """No-grad teacher pass in chunks of `batch`: logits (N, K) and pooled taps {tap: (N, C)} on CPU.
    `run` replaces model(x) (the suffix, when x holds cached prefix activations)."""
    run = run or model
    outs, feats = [], {t: [] for t in taps}
    with torch.no_grad(), feature_taps(model, taps) as store:
        for i in range(0, max(len(x), 1), batch):  # an empty x still runs once: (0, K) outputs
            outs.append(run(x[i : i + batch]).float().cpu())
            for t in taps:
                feats[t].append(pooled(store[t]).cpu())
    return torch.cat(outs), {t: torch.cat(v) for t, v in feats.items()}


def rfa(
    original: nn.Module,
    task: UnlearnTask,
    lora: LoraSettings,
    cfg: RfaSettings,
    progress: ProgressFn = no_progress,
) -> UnlearnResult:
    """Residual Feature Alignment with LoRA (method.md 1.2, our reconstruction).

    L = L_r + lambda * L_f (+ optional CE on Dr), where
      L_r = sum over taps and logits of relative_sq_distance(student(x_r), teacher(x_r))  (zero residual)
      L_f = forget_loss(student logits(x_f), target logits) + w_feat * sum over taps of
            relative_sq_distance(pooled student tap(x_f), target pooled tap)              (shifted residual)
      (+ probe_weight * recognition_penalty of an in-loop linear probe on the last tap; class only)
    The student runs in eval mode throughout (frozen BN statistics); only LoRA weights train.
    Steps scale with |Df|: `forget_epochs` passes over Df, within [`min_steps`, `max_steps`];
    with checks on, it stops early on reaching the target or after `stop_patience` stale checks.
    On models with a frozen prefix (no adapter below a stage) and `retain_pool` > 0, the prefix
    runs once per image and retain batches come from that pool (components/lora.frozen_split).
    """
    t0 = time.perf_counter()
    sc = cfg.scenario(task.scenario)
    forget_loss = get_forget_loss(sc.forget_loss)  # before any work: a misspelt name fails at once
    device = resolve_device(cfg.device)
    gen = set_seed(cfg.seed)
    policy = device_policy(device)  # CUDA: bf16 autocast + channels_last; CPU: plain fp32
    teacher = policy.prepare(copy.deepcopy(original).to(device)).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    student = policy.prepare(attach_lora(copy.deepcopy(original), lora).to(device))
    student.eval()  # BN running statistics stay frozen: features cannot drift through them

    taps = tuple(cfg.taps)
    xf, yf = (
        policy.layout(to_input(task.forget.x).to(device)),
        torch.from_numpy(task.forget.y).to(device),
    )
    retain = task.retain
    run_t, run_s = teacher, student
    split = frozen_split(student) if cfg.retain_pool else None
    if split is not None:  # only the pool is ever read: convert and move that, not all of Dr
        retain = retain.take(torch.randperm(len(retain), generator=gen)[: cfg.retain_pool].numpy())
    xr, yr = policy.layout(to_input(retain.x).to(device)), torch.from_numpy(retain.y).to(device)
    if split is not None:
        # The layers below every adapter are frozen, so their output is a pure function of the
        # image: compute it once for Df and the retain pool, then every pass runs the rest only.
        t_prefix, run_t = frozen_split(teacher)
        xr, xf = (
            _prefix_pass(t_prefix, xr, policy, device),
            _prefix_pass(t_prefix, xf, policy, device),
        )
        run_s = split[1]

    # Teacher view for the targets: one no-grad pass over Df, a retain subsample and the heldout split.
    ref_idx = torch.randperm(len(yr), generator=gen)[: min(len(yr), 4000)].to(device)
    chunk = policy.infer_batch
    if sc.target not in NEEDS_RETAIN_REFERENCE and sc.probe_weight == 0:
        # Nothing reads the retain reference: skip its pass (4,000 images), but keep the index
        # draw above, so later draws (batches, the check subset) are those of a full run.
        ref_idx = ref_idx[:0]
    f_logits, f_pooled = _logits_and_taps(teacher, xf, taps, chunk, run=run_t)
    r_logits, r_pooled = _logits_and_taps(teacher, xr[ref_idx], taps, chunk, run=run_t)
    h_logits, h_labels = (
        f_logits[:0],
        yf.cpu()[:0],
    )  # class targets never read the non-member reference
    refresh = sc.target_refresh if sc.target in NEEDS_HELDOUT else 0
    if sc.target in NEEDS_HELDOUT:
        xh = to_input(task.heldout.x).to(device)
        h_logits = _logits_and_taps(teacher, xh, (), chunk)[0]
        h_labels = torch.from_numpy(task.heldout.y)
        if (
            refresh
        ):  # the student re-reads heldout later: give it the same (prefix-cached) input as Df
            xh = policy.layout(xh)
            xh = _prefix_pass(t_prefix, xh, policy, device) if split is not None else xh
    view = TeacherView(
        f_logits,
        f_pooled,
        yf.cpu(),
        r_logits,
        yr[ref_idx].cpu(),
        r_pooled,
        h_logits,
        h_labels,
        task.forget_classes,
    )
    target = get_target(sc.target)(view)
    t_logits = target.logits.to(device)
    t_feats = {k: v.to(device) for k, v in target.features.items()}

    probe = _warm_probe(view, taps[-1], device, sc) if sc.probe_weight > 0 else None

    params = [p for p in student.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=sc.lr)
    nf = len(yf)
    steps = min(
        cfg.max_steps, max(cfg.min_steps, sc.forget_epochs * math.ceil(nf / sc.forget_batch))
    )
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
    history: list[dict[str, float]] = []
    perm = torch.randperm(nf, generator=gen)
    # A fixed subset, not the running batch accuracy, which is too noisy to stop on (method.md 6).
    check = perm[: min(nf, 256)].to(device)
    check_target = 100.0 * (t_logits[check].argmax(1) == yf[check]).float().mean().item()
    # The batch draws start from the same `perm`; the generator draws nothing until the loop asks.
    focus = target_divergence(f_logits.cpu(), target.logits.cpu()) if sc.forget_focus > 0 else None
    batches = forget_batches(perm, sc.forget_batch, gen, focus, sc.forget_focus)
    done, stop_reason = steps, "steps"
    best, stale = math.inf, 0
    with feature_taps(student, taps) as s_store, feature_taps(teacher, taps) as t_store:
        for step in range(1, steps + 1):
            fi = next(batches).to(device)
            ri = torch.randint(len(yr), (cfg.retain_batch,), generator=gen).to(device)
            nb = len(ri)
            with torch.no_grad(), policy.autocast(device):
                t_out = run_t(xr[ri]).float()
                t_taps = {t: t_store[t].float() for t in taps}
            # One student pass over [retain; forget]: eval-mode BN does not mix the two halves.
            # The losses are computed in fp32 whatever precision the forward ran in.
            with policy.autocast(device):
                s_out = run_s(torch.cat([xr[ri], xf[fi]])).float()
            s_taps = {t: s_store[t].float() for t in taps}
            loss_r = relative_sq_distance(s_out[:nb], t_out)
            for t in taps:
                loss_r = loss_r + relative_sq_distance(s_taps[t][:nb], t_taps[t])
            loss_f = forget_loss(s_out[nb:], t_logits[fi])
            for t, tf in t_feats.items():
                loss_f = loss_f + sc.feature_weight * relative_sq_distance(
                    pooled(s_taps[t][nb:]), tf[fi]
                )
            if (
                probe is not None
            ):  # the probe learns the current features, then Df is pushed away from it
                feats = pooled(s_taps[taps[-1]])  # (nb + bf, C): the stage the head pools
                probe_net, probe_opt, bank = probe
                bank.add(feats, torch.cat([yr[ri], yf[fi]]))
                probe_fit = fit_probe(
                    probe_net, probe_opt, bank.feats, bank.labels, steps=sc.probe_steps
                )
                loss_p = recognition_penalty(probe_net, feats[nb:], task.forget_classes)
                loss_f = loss_f + sc.probe_weight * loss_p
            loss = loss_r + sc.forget_weight * loss_f
            if sc.retain_ce_weight > 0:
                loss = loss + sc.retain_ce_weight * F.cross_entropy(s_out[:nb], yr[ri])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            if refresh and step % refresh == 0 and step < steps:
                # Re-aim Df at the non-members of the model as it is now (settings.target_refresh).
                view = replace(
                    view, heldout_logits=_logits_and_taps(student, xh, (), chunk, run=run_s)[0]
                )
                t_logits = get_target(sc.target)(view).logits.to(device)
            if step % 10 == 0 or step == steps:
                rec = {
                    "step": float(step),
                    "loss_retain": loss_r.item(),
                    "loss_forget": loss_f.item(),
                }
                if probe is not None:
                    rec |= {"probe_fit": probe_fit, "probe_penalty": loss_p.item()}
                history.append(rec)
                progress(step, steps, rec)
            if cfg.stop_check_every and step >= cfg.min_steps and step % cfg.stop_check_every == 0:
                with torch.no_grad(), policy.autocast(device):
                    acc = 100.0 * (run_s(xf[check]).argmax(1) == yf[check]).float().mean().item()
                history.append(
                    {"step": float(step), "check_acc": acc, "check_target": check_target}
                )
                improved = best - acc > cfg.stop_tolerance_pt
                best, stale = (acc, 0) if improved else (best, stale + 1)
                if acc <= check_target + cfg.stop_tolerance_pt:
                    done, stop_reason = step, "target"
                    break
                if cfg.stop_patience and stale >= cfg.stop_patience:
                    done, stop_reason = step, "stalled"
                    break

    adapter = adapter_state(student)
    share = trainable_fraction(student)
    merged = student.merge_and_unload().to("cpu").to(memory_format=torch.contiguous_format).eval()
    return UnlearnResult(
        model=merged,
        adapter=adapter,
        seconds=time.perf_counter() - t0,
        trainable_fraction=share,
        steps=done,
        device=str(device),
        history=history,
        stop_reason=stop_reason,
    )


def forget_batches(
    perm: torch.Tensor,
    batch: int,
    gen: torch.Generator,
    weights: torch.Tensor | None = None,
    focus: float = 0.0,
) -> Iterator[torch.Tensor]:
    """Forget-batch indices, forever: passes over Df in random order (starting with `perm`), of
    which a `focus` share of every batch is instead drawn with replacement in proportion to
    `weights` (per-sample, e.g. target_divergence). focus 0 (or no weights) draws exactly what
    plain passes always drew, so earlier runs reproduce. Weights all zero: uniform draws."""
    n = len(perm)
    n_focus = round(focus * batch) if weights is not None else 0
    plain = batch - n_focus
    if n_focus:
        w = weights.double() if float(weights.sum()) > 0 else torch.ones(n, dtype=torch.float64)
    cursor = 0
    while True:
        if cursor + plain > n:
            perm, cursor = torch.randperm(n, generator=gen), 0
        idx = perm[cursor : cursor + plain]
        cursor += plain
        if n_focus:
            idx = torch.cat([idx, torch.multinomial(w, n_focus, replacement=True, generator=gen)])
        yield idx


@torch.no_grad()
def _prefix_pass(prefix: Callable, x: torch.Tensor, policy, device: torch.device) -> torch.Tensor:
    """The frozen prefix's activations for x (N, ...) in chunks, kept on the device."""
    batch = policy.infer_batch
    with policy.autocast(device):
        return torch.cat([prefix(x[i : i + batch]).float() for i in range(0, len(x), batch)])


def _warm_probe(
    view: TeacherView, tap: str, device: torch.device, sc: ScenarioSettings, warm_steps: int = 200
) -> tuple[ForgetProbe, torch.optim.Optimizer, FeatureBank]:
    """The adversarial probe, first fitted on the teacher's features of the retain subsample plus
    as many Df samples as one retained class has (so the forgotten class is not over-weighted);
    its bank starts from those features and fills with the student's as RFA runs."""
    k = view.retain_logits.shape[1]
    per_class = max(1, len(view.retain_labels) // max(1, k - len(view.forget_classes)))
    feats = torch.cat([view.retain_pooled[tap], view.forget_pooled[tap][:per_class]]).to(device)
    labels = torch.cat([view.retain_labels, view.forget_labels[:per_class]]).to(device)
    probe = ForgetProbe(feats, k).to(device)
    opt = torch.optim.Adam(probe.parameters(), lr=sc.probe_lr)
    fit_probe(probe, opt, feats, labels, steps=warm_steps)
    shuffle = torch.randperm(len(labels), device=device)  # the bank drops its oldest entries first
    return probe, opt, FeatureBank(feats[shuffle], labels[shuffle], sc.probe_bank)


@dataclass(frozen=True)
class MethodConfig:
    """Everything any registered method may read; each takes only its own part."""

    lora: LoraSettings = LoraSettings()
    rfa: RfaSettings = RfaSettings()
    baseline: BaselineSettings = BaselineSettings()
    train: TrainSettings = TrainSettings()  # the Retrain oracle's schedule


Method = Callable[[nn.Module, UnlearnTask, MethodConfig, ProgressFn], UnlearnResult]


def _rfa(
    original: nn.Module, task: UnlearnTask, cfg: MethodConfig, progress: ProgressFn = no_progress
) -> UnlearnResult:
    return rfa(original, task, cfg.lora, cfg.rfa, progress)


def _baseline(fn) -> Method:
    def run(
        original: nn.Module,
        task: UnlearnTask,
        cfg: MethodConfig,
        progress: ProgressFn = no_progress,
    ) -> UnlearnResult:
        return fn(original, task, cfg.baseline, cfg.train, progress)

    run.__doc__ = fn.__doc__
    return run


METHODS: dict[str, Method] = {
    "rfa": _rfa,
    **{name: _baseline(fn) for name, fn in BASELINES.items()},
}


def get_method(name: str) -> Method:
    try:
        return METHODS[name]
    except KeyError:
        raise ValueError(
            f"unknown unlearning method {name!r}; choose one of {sorted(METHODS)}"
        ) from None
