"""Baselines behind the same method signature as RFA (method.md section 2), each following its
reference implementation; every docstring names the recipe and every departure from it.

retrain (the oracle), ft, neggrad (NegGrad+), rl (random labels), salun (RL on a saliency mask),
scrub (teacher-student KL: max-steps on Df, min-steps on Dr). All full-weight methods use SGD with
momentum 0.9 and weight decay 5e-4 and train with BatchNorm in train mode on batches augmented
as the original's were (crop + flip where `train.augment`), as the references do (sgd_loop.py).
The learning rate is what the benchmark tunes (`bench.grids`); `BaselineSettings` and the
params file's `bench.recipes` hold the rest, at the references' values except where a docstring
names the departure.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from components.data import Split
from components.models import to_input
from components.runtime import ProgressFn, no_progress, precision_policy, resolve_device, set_seed
from components.settings import BaselineSettings, TrainSettings
from components.training import Checkpoints, train_classifier
from components.unlearning.sgd_loop import Ticks, Under, n_batches, result, sgd, start, step
from components.unlearning.types import UnlearnResult, UnlearnTask


def _augment(train_cfg: TrainSettings | None) -> bool:
    """Crop + flip where the original was trained with them (sgd_loop.Batches says why)."""
    return train_cfg is not None and train_cfg.augment


def _num_classes(model: nn.Module) -> int:
    last = [m for m in model.modules() if isinstance(m, nn.Linear)][-1]
    return last.out_features


def retrain(
    original: nn.Module,
    task: UnlearnTask,
    cfg: BaselineSettings,
    train_cfg: TrainSettings | None = None,
    progress: ProgressFn = no_progress,
    checkpoints: Checkpoints | None = None,
) -> UnlearnResult:
    """Train the same architecture from scratch on Dr with the original's recipe: the oracle.
    With `checkpoints` a killed run resumes from its last epoch (`train_classifier`)."""
    t0 = time.perf_counter()
    device = resolve_device(cfg.device)
    set_seed(cfg.seed)
    model = copy.deepcopy(original)
    for m in model.modules():
        if hasattr(m, "reset_parameters") and m is not model:
            m.reset_parameters()
    info = train_classifier(model, task.retain, train_cfg, device, progress, checkpoints)
    res = result(model, t0, int(info["steps"]), device)
    res.seconds += info["earlier_seconds"]  # a resumed run's include the runs before it
    return res


def ft(
    original: nn.Module,
    task: UnlearnTask,
    cfg: BaselineSettings,
    train_cfg: TrainSettings | None = None,
    progress: ProgressFn = no_progress,
) -> UnlearnResult:
    """FT (Warnecke et al. 2023, as run by SalUn's `unlearn/FT.py`): `epochs` full passes over
    Dr with cross-entropy (SalUn: 10 epochs, lr 0.01). Departure: the learning rate decays by a
    cosine schedule to zero over the run, where the reference's step milestones (epochs 91 and
    136) never fire within 10 epochs."""
    t0 = time.perf_counter()
    model, data = start(original, cfg, _augment(train_cfg))
    opt = sgd(model.parameters(), cfg)
    ticks = Ticks(progress, cfg.epochs * n_batches(task.retain, cfg.batch_size))
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=ticks.total)
    for _ in range(cfg.epochs):
        for x, y in data.once(task.retain, cfg.batch_size):
            loss = F.cross_entropy(model(x), y)
            step(opt, loss)
            sched.step()
            ticks(loss)
    return result(model.model, t0, ticks.n, data.device)


def neggrad(
    original: nn.Module,
    task: UnlearnTask,
    cfg: BaselineSettings,
    train_cfg: TrainSettings | None = None,
    progress: ProgressFn = no_progress,
) -> UnlearnResult:
    """NegGrad+ (Kurmanji et al., NeurIPS 2023, section 5), the loop of the SCRUB repository's
    `train_negrad`: `epochs` passes over Dr; each retain batch is paired with the next forget
    batch (Df cycled) and the loss is alpha * CE(Dr) - (1 - alpha) * CE(Df), BatchNorm in train
    mode. Departures from the repository's small-scale notebook (alpha 0.95, 10 epochs, lr 0.01,
    plain SGD with an L2 pull toward the original weights, BatchNorm held in eval mode): alpha
    0.9, 5 epochs (`bench.recipes`), SGD with momentum 0.9 and weight decay 5e-4 like the other
    baselines, and the lr tuned on a grid. `forget_cap`, when set, clamps the ascent term (the
    reference has none; the default leaves it off)."""
    t0 = time.perf_counter()
    model, data = start(original, cfg, _augment(train_cfg))
    opt = sgd(model.parameters(), cfg)
    forget = data.forever(task.forget, cfg.forget_batch or cfg.batch_size)
    ticks = Ticks(progress, cfg.epochs * n_batches(task.retain, cfg.batch_size))
    for _ in range(cfg.epochs):
        for xr, yr in data.once(task.retain, cfg.batch_size):
            xf, yf = next(forget)
            ascent = F.cross_entropy(model(xf), yf)
            if cfg.forget_cap is not None:
                ascent = torch.clamp(ascent, max=cfg.forget_cap)
            loss = cfg.alpha * F.cross_entropy(model(xr), yr) - (1 - cfg.alpha) * ascent
            step(opt, loss)
            ticks(loss)
    return result(model.model, t0, ticks.n, data.device)


def _relabel_then_retain(
    original: nn.Module,
    task: UnlearnTask,
    cfg: BaselineSettings,
    augment: bool,
    progress: ProgressFn,
    mask: dict[str, torch.Tensor] | None = None,
) -> tuple[Under, int, torch.device]:
    """SalUn's `unlearn/RL.py` loop for CIFAR-10: each epoch one pass over Df with labels drawn
    uniformly from all classes (they may equal the true one, as there), then one full pass over
    Dr. With a mask, gradients of non-salient weights are zeroed and those weights held at their
    starting values, momentum included (the reference's `_restore_masked_params`)."""
    model, data = start(original, cfg, augment)
    opt = sgd(model.parameters(), cfg)
    k = _num_classes(original)
    params = dict(model.model.named_parameters())  # the mask's names are the model's own
    theta0 = {n: params[n].detach().clone() for n in mask or {}}

    def masked() -> None:
        for n, m in (mask or {}).items():
            if params[n].grad is not None:
                params[n].grad.mul_(m)

    def hold() -> None:
        with torch.no_grad():
            for n, m in (mask or {}).items():
                p = params[n]
                p.mul_(m).add_(theta0[n] * (1 - m))
                buf = opt.state.get(p, {}).get("momentum_buffer")
                if buf is not None:
                    buf.mul_(m)

    per_epoch = n_batches(task.forget, cfg.batch_size) + n_batches(task.retain, cfg.batch_size)
    ticks = Ticks(progress, cfg.epochs * per_epoch)

    def update(loss: torch.Tensor) -> None:
        step(opt, loss, masked if mask else None)
        if mask:
            hold()
        ticks(loss)

    for _ in range(cfg.epochs):
        for x, y in data.once(task.forget, cfg.batch_size):
            noise = torch.randint(0, k, y.shape, generator=data.gen).to(data.device)
            update(F.cross_entropy(model(x), noise))
        for x, y in data.once(task.retain, cfg.batch_size):
            update(F.cross_entropy(model(x), y))
    return model, ticks.n, data.device


def rl(
    original: nn.Module,
    task: UnlearnTask,
    cfg: BaselineSettings,
    train_cfg: TrainSettings | None = None,
    progress: ProgressFn = no_progress,
) -> UnlearnResult:
    """Random labels (Golatkar et al. 2020) as SalUn runs it (`unlearn/RL.py`, CIFAR-10 branch:
    10 epochs, each a random-label pass over Df then a pass over Dr, lr about 0.01, batch 256).
    No departure beyond the batch size, which is `batch_size` here."""
    t0 = time.perf_counter()
    model, steps, device = _relabel_then_retain(original, task, cfg, _augment(train_cfg), progress)
    return result(model.model, t0, steps, device)


def saliency_mask(
    model: nn.Module,
    forget: Split,
    fraction: float,
    device: torch.device,
    precision: str = "fp32",
) -> dict[str, torch.Tensor]:
    """SalUn's weight saliency (Fan et al., ICLR 2024, `generate_mask.py`): the magnitude of the
    forget loss's gradient summed over Df, with one global threshold keeping the top `fraction`
    of all weights (their `with_0.5.pt`: half). The gradient pass runs under `precision`, as
    the unlearning after it does."""
    run = Under(model.eval(), precision_policy(device, precision), device)
    model.zero_grad(set_to_none=True)
    for i in range(0, len(forget), 256):
        x = to_input(forget.x[i : i + 256]).to(device)
        y = torch.from_numpy(forget.y[i : i + 256]).to(device)
        F.cross_entropy(run(x), y, reduction="sum").backward()
    grads = {n: p.grad.abs() for n, p in model.named_parameters() if p.grad is not None}
    flat = torch.cat([g.flatten() for g in grads.values()])
    k = max(1, int(fraction * flat.numel()))
    threshold = flat.kthvalue(flat.numel() - k + 1).values
    model.zero_grad(set_to_none=True)
    return {n: (g >= threshold).float().contiguous() for n, g in grads.items()}


def salun(
    original: nn.Module,
    task: UnlearnTask,
    cfg: BaselineSettings,
    train_cfg: TrainSettings | None = None,
    progress: ProgressFn = no_progress,
) -> UnlearnResult:
    """SalUn (Fan et al., ICLR 2024; `main_random.py --unlearn RL --mask_path with_0.5.pt`):
    random-label unlearning as `rl`, on the salient half of the weights only (the rest held at
    their values). The mask is part of its cost: the clock starts before it."""
    t0 = time.perf_counter()
    device = resolve_device(cfg.device)
    mask = saliency_mask(
        copy.deepcopy(original), task.forget, cfg.saliency_fraction, device, cfg.precision
    )
    model, steps, device = _relabel_then_retain(
        original, task, cfg, _augment(train_cfg), progress, mask
    )
    share = sum(float(m.sum()) for m in mask.values()) / max(
        1, sum(m.numel() for m in mask.values())
    )
    return result(model.model, t0, steps, device, trainable=share)


def _kl(student: torch.Tensor, teacher: torch.Tensor, t: float) -> torch.Tensor:
    """Hinton's distillation KL at temperature t, scaled by t^2 (the reference's DistillKL)."""
    log_p = F.log_softmax(student / t, 1)
    return F.kl_div(log_p, F.softmax(teacher / t, 1), reduction="batchmean") * t * t


def scrub(
    original: nn.Module,
    task: UnlearnTask,
    cfg: BaselineSettings,
    train_cfg: TrainSettings | None = None,
    progress: ProgressFn = no_progress,
) -> UnlearnResult:
    """SCRUB (Kurmanji et al., NeurIPS 2023), as the authors' `large_scale_unlearning.ipynb` runs it
    on CIFAR-10 (loop: `thirdparty/repdistiller/helper/loops.py`, `train_distill`): the student
    starts at the teacher. In each of the first `scrub_max_steps` epochs (the reference's 1-based
    `epoch <= msteps`: two with msteps 2), a max pass over Df in batches of `forget_batch` (32)
    raises KL(student || teacher); then a full min pass over Dr (batches of `batch_size`, 128)
    lowers `scrub_ce` * CE + `scrub_kl` * KL (0.99 / 0.001), KL at temperature 4; three epochs
    (`bench.recipes`); the lr (5e-4 there) drops tenfold after each epoch of `lr_decay_epochs` (3,
    5, 9: none within three). No departure in the loop. At 5e-4 the first max pass takes this
    pre-trained ResNet-20's Acc(Dr) from 99.5 to 10 (10 % Df) within 140 steps, on crop + flip
    batches as on plain ones (70 steps there), where the authors' ResNet-18 / All-CNN keep it
    (`python -m benchmarks.scrub_trace`; benchmarks/notes/baselines-bn.md). The benchmark moves
    the lr grid, not the loop."""
    t0 = time.perf_counter()
    loop = ScrubLoop(original, cfg, _augment(train_cfg))
    decay = torch.optim.lr_scheduler.MultiStepLR(loop.opt, list(cfg.lr_decay_epochs), gamma=0.1)
    max_epochs = min(cfg.epochs, cfg.scrub_max_steps)
    forget_steps = max_epochs * n_batches(task.forget, cfg.forget_batch or cfg.batch_size)
    ticks = Ticks(progress, forget_steps + cfg.epochs * n_batches(task.retain, cfg.batch_size))
    for epoch in range(cfg.epochs):
        if epoch < cfg.scrub_max_steps:  # 0-based here
            loop.max_pass(task.forget, lambda _, loss: ticks(loss))
        loop.min_pass(task.retain, lambda _, loss: ticks(loss))
        decay.step()
    return result(loop.student.model, t0, ticks.n, loop.data.device)


StepHook = Callable[[int, torch.Tensor], None]  # (step from 1, its loss), e.g. for a trace


class ScrubLoop:
    """SCRUB's student, teacher and passes, so `scrub` and `benchmarks.scrub_trace` take the same
    steps; each pass calls `hook` after each step."""

    def __init__(self, original: nn.Module, cfg: BaselineSettings, augment: bool = False) -> None:
        self.student, self.data = start(original, cfg, augment)
        self.teacher = Under(copy.deepcopy(original), self.student.policy, self.data.device).eval()
        self.opt, self.cfg = sgd(self.student.parameters(), cfg), cfg

    def max_pass(self, forget: Split, hook: StepHook | None = None) -> None:
        """Raise KL(student || teacher) over Df in batches of `forget_batch`."""
        t = self.cfg.temperature
        batch = self.cfg.forget_batch or self.cfg.batch_size
        self._pass(forget, batch, lambda out, tl, _: -_kl(out, tl, t), hook)

    def min_pass(self, retain: Split, hook: StepHook | None = None) -> None:
        """Lower `scrub_ce` * CE + `scrub_kl` * KL over Dr in batches of `batch_size`."""
        c = self.cfg

        def loss(out: torch.Tensor, tl: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
            return c.scrub_ce * F.cross_entropy(out, y) + c.scrub_kl * _kl(out, tl, c.temperature)

        self._pass(retain, c.batch_size, loss, hook)

    def _pass(self, split: Split, batch: int, loss_of: Callable, hook: StepHook | None) -> None:
        for k, (x, y) in enumerate(self.data.once(split, batch), 1):
            with torch.no_grad():
                tl = self.teacher(x)
            loss = loss_of(self.student(x), tl, y)
            step(self.opt, loss)
            if hook is not None:
                hook(k, loss)


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
