"""Baselines behind the same method signature as RFA (method.md section 2).

retrain (the oracle), ft, neggrad (NegGrad+), rl (random labels), salun (RL on a saliency mask),
scrub (teacher-student KL, max-steps on Df, min-steps on Dr). Unlearning is learning-rate
sensitive: each takes `lr` from `BaselineSettings`, and the benchmark sweeps a small grid.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Iterator

import torch
import torch.nn.functional as F
from torch import nn

from components.data import Split
from components.models import to_input
from components.runtime import ProgressFn, no_progress, resolve_device, set_seed
from components.settings import BaselineSettings, TrainSettings
from components.training import train_classifier
from components.unlearning.types import UnlearnResult, UnlearnTask

# One step's loss from a forget batch (xf, yf) and a retain batch (xr, yr).
PairedStep = Callable[
    [nn.Module, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Generator],
    torch.Tensor,
]


def _batches(
    split: Split, batch: int, gen: torch.Generator, device: torch.device
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    perm = torch.randperm(len(split), generator=gen)
    x, y = to_input(split.x), torch.from_numpy(split.y)
    for i in range(0, len(perm), batch):
        idx = perm[i : i + batch]
        yield x[idx].to(device), y[idx].to(device)


def _cycle(
    split: Split, batch: int, gen: torch.Generator, device: torch.device
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    while True:
        yield from _batches(split, batch, gen, device)


def _train_mode(model: nn.Module) -> nn.Module:
    """Full-weight baselines train as their reference implementations do: BatchNorm in train mode.
    Frozen BN statistics (RFA's policy, right for a low-rank adapter) made plain SGD diverge to NaN
    within 100 steps on the Fashion-MNIST CNN at both FT learning rates of the grid (0.01, 0.04)."""
    return model.train()


def _result(
    model: nn.Module, t0: float, steps: int, device: torch.device, trainable: float = 1.0
) -> UnlearnResult:
    return UnlearnResult(
        model=model.to("cpu").eval(),
        adapter={},
        seconds=time.perf_counter() - t0,
        trainable_fraction=trainable,
        steps=steps,
        device=str(device),
    )


def retrain(
    original: nn.Module,
    task: UnlearnTask,
    cfg: BaselineSettings,
    train_cfg: TrainSettings | None = None,
    progress: ProgressFn = no_progress,
) -> UnlearnResult:
    """Train the same architecture from scratch on Dr: the gold standard (oracle)."""
    t0 = time.perf_counter()
    device = resolve_device(cfg.device)
    set_seed(cfg.seed)
    model = copy.deepcopy(original)
    for m in model.modules():
        if hasattr(m, "reset_parameters") and m is not model:
            m.reset_parameters()
    info = train_classifier(model, task.retain, train_cfg, device, progress)
    return _result(model, t0, int(info.get("steps", 0)), device)


def ft(
    original: nn.Module,
    task: UnlearnTask,
    cfg: BaselineSettings,
    train_cfg: TrainSettings | None = None,
    progress: ProgressFn = no_progress,
) -> UnlearnResult:
    """Fine-tune all weights on Dr for `epochs` passes."""
    t0 = time.perf_counter()
    device = resolve_device(cfg.device)
    gen = set_seed(cfg.seed)
    model = _train_mode(copy.deepcopy(original).to(device))
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=0.9)
    steps = 0
    for _ in range(cfg.epochs):
        for x, y in _batches(task.retain, cfg.batch_size, gen, device):
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            steps += 1
    return _result(model, t0, steps, device)


def _paired_loop(
    original: nn.Module,
    task: UnlearnTask,
    cfg: BaselineSettings,
    step_fn: PairedStep,
    params: Callable[[nn.Module], Iterator[nn.Parameter]] | None = None,
) -> tuple[nn.Module, float, int, torch.device]:
    """Shared loop: `epochs` passes over Df, each forget batch paired with a retain batch."""
    t0 = time.perf_counter()
    device = resolve_device(cfg.device)
    gen = set_seed(cfg.seed)
    model = _train_mode(copy.deepcopy(original).to(device))
    opt = torch.optim.SGD(params(model) if params else model.parameters(), lr=cfg.lr, momentum=0.9)
    retain = _cycle(task.retain, cfg.batch_size, gen, device)
    steps = 0
    fb = max(1, min(cfg.batch_size, math.ceil(len(task.forget) / 4)))
    for _ in range(cfg.epochs):
        for xf, yf in _batches(task.forget, fb, gen, device):
            xr, yr = next(retain)
            loss = step_fn(model, xf, yf, xr, yr, gen)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            steps += 1
    return model, t0, steps, device


def neggrad(
    original: nn.Module,
    task: UnlearnTask,
    cfg: BaselineSettings,
    train_cfg: TrainSettings | None = None,
    progress: ProgressFn = no_progress,
) -> UnlearnResult:
    """NegGrad+: alpha * CE(Dr) - (1 - alpha) * min(CE(Df), cap)."""

    def step(
        model: nn.Module,
        xf: torch.Tensor,
        yf: torch.Tensor,
        xr: torch.Tensor,
        yr: torch.Tensor,
        gen: torch.Generator,
    ) -> torch.Tensor:
        ascent = torch.clamp(F.cross_entropy(model(xf), yf), max=cfg.forget_cap)
        return cfg.alpha * F.cross_entropy(model(xr), yr) - (1 - cfg.alpha) * ascent

    model, t0, steps, device = _paired_loop(original, task, cfg, step)
    return _result(model, t0, steps, device)


def _random_wrong(y: torch.Tensor, k: int, gen: torch.Generator) -> torch.Tensor:
    shift = torch.randint(1, k, y.shape, generator=gen).to(y.device)
    return (y + shift) % k


def _rl_step(num_classes: int) -> PairedStep:
    def step(
        model: nn.Module,
        xf: torch.Tensor,
        yf: torch.Tensor,
        xr: torch.Tensor,
        yr: torch.Tensor,
        gen: torch.Generator,
    ) -> torch.Tensor:
        return F.cross_entropy(model(xf), _random_wrong(yf, num_classes, gen)) + F.cross_entropy(
            model(xr), yr
        )

    return step


def rl(
    original: nn.Module,
    task: UnlearnTask,
    cfg: BaselineSettings,
    train_cfg: TrainSettings | None = None,
    progress: ProgressFn = no_progress,
) -> UnlearnResult:
    """Random labels: Df relabelled to a random wrong class, trained together with Dr."""
    k = _num_classes(original)
    model, t0, steps, device = _paired_loop(original, task, cfg, _rl_step(k))
    return _result(model, t0, steps, device)


def _num_classes(model: nn.Module) -> int:
    last = [m for m in model.modules() if isinstance(m, nn.Linear)][-1]
    return last.out_features


def saliency_mask(
    model: nn.Module, forget: Split, fraction: float, device: torch.device
) -> dict[str, torch.Tensor]:
    """SalUn (Fan et al., ICLR'24): weights whose forget-loss gradient magnitude is in the top
    `fraction` (one global threshold)."""
    model = model.to(device).eval()
    model.zero_grad(set_to_none=True)
    x, y = to_input(forget.x).to(device), torch.from_numpy(forget.y).to(device)
    for i in range(0, len(y), 256):
        F.cross_entropy(model(x[i : i + 256]), y[i : i + 256], reduction="sum").backward()
    grads = {n: p.grad.abs() for n, p in model.named_parameters() if p.grad is not None}
    flat = torch.cat([g.flatten() for g in grads.values()])
    k = max(1, int(fraction * flat.numel()))
    threshold = flat.kthvalue(flat.numel() - k + 1).values
    model.zero_grad(set_to_none=True)
    return {n: (g >= threshold).float() for n, g in grads.items()}


def salun(
    original: nn.Module,
    task: UnlearnTask,
    cfg: BaselineSettings,
    train_cfg: TrainSettings | None = None,
    progress: ProgressFn = no_progress,
) -> UnlearnResult:
    """Random-label unlearning restricted to the salient weights."""
    # The saliency mask is part of SalUn's cost: the clock starts before it.
    t0 = time.perf_counter()
    device = resolve_device(cfg.device)
    mask = saliency_mask(copy.deepcopy(original), task.forget, cfg.saliency_fraction, device)
    k = _num_classes(original)
    rl_step = _rl_step(k)

    def step(
        model: nn.Module,
        xf: torch.Tensor,
        yf: torch.Tensor,
        xr: torch.Tensor,
        yr: torch.Tensor,
        gen: torch.Generator,
    ) -> torch.Tensor:
        loss = rl_step(model, xf, yf, xr, yr, gen)
        for n, p in model.named_parameters():  # zero the gradient of non-salient weights
            if n in mask and p.requires_grad and not hasattr(p, "_salun_hook"):
                p.register_hook(lambda g, m=mask[n]: g * m)
                p._salun_hook = True
        return loss

    model, _, steps, device = _paired_loop(original, task, cfg, step)
    share = sum(float(m.sum()) for m in mask.values()) / max(
        1, sum(m.numel() for m in mask.values())
    )
    return _result(model, t0, steps, device, trainable=share)


def scrub(
    original: nn.Module,
    task: UnlearnTask,
    cfg: BaselineSettings,
    train_cfg: TrainSettings | None = None,
    progress: ProgressFn = no_progress,
) -> UnlearnResult:
    """SCRUB (Kurmanji et al. 2023): student starts at the teacher; max-steps push its outputs on
    Df away from the teacher (KL up), min-steps keep Dr close (KL + CE down)."""
    t0 = time.perf_counter()
    device = resolve_device(cfg.device)
    gen = set_seed(cfg.seed)
    teacher = copy.deepcopy(original).to(device).eval()
    student = _train_mode(copy.deepcopy(original).to(device))
    opt = torch.optim.SGD(student.parameters(), lr=cfg.lr, momentum=0.9)
    t = cfg.temperature

    def kl(s_logits: torch.Tensor, t_logits: torch.Tensor) -> torch.Tensor:
        return (
            F.kl_div(
                F.log_softmax(s_logits / t, 1), F.softmax(t_logits / t, 1), reduction="batchmean"
            )
            * t
            * t
        )

    steps = 0
    retain = _cycle(task.retain, cfg.batch_size, gen, device)
    for epoch in range(cfg.epochs):
        if epoch < cfg.scrub_max_steps:
            for xf, _ in _batches(task.forget, cfg.batch_size, gen, device):
                with torch.no_grad():
                    tl = teacher(xf)
                loss = -kl(student(xf), tl)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                steps += 1
        for _ in range(max(1, math.ceil(len(task.forget) / cfg.batch_size))):
            xr, yr = next(retain)
            with torch.no_grad():
                tl = teacher(xr)
            out = student(xr)
            loss = kl(out, tl) + F.cross_entropy(out, yr)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            steps += 1
    return _result(student, t0, steps, device)


# (original, task, baseline settings, the oracle's training schedule, progress) -> result
Baseline = Callable[
    [nn.Module, UnlearnTask, BaselineSettings, TrainSettings, ProgressFn], UnlearnResult
]

BASELINES: dict[str, Baseline] = {
    "retrain": retrain,
    "ft": ft,
    "neggrad": neggrad,
    "rl": rl,
    "salun": salun,
    "scrub": scrub,
}
