"""Supervised training of a base model (also the engine of the Retrain baseline)."""

from __future__ import annotations

import time
from typing import Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from components.data import Split
from components.models import to_input
from components.runtime import ProgressFn, no_progress, precision_policy, set_seed
from components.settings import TrainSettings

OPTIMIZERS = {
    "adam": lambda params, cfg: torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay),
    "sgd": lambda params, cfg: torch.optim.SGD(
        params, lr=cfg.lr, momentum=0.9, nesterov=True, weight_decay=cfg.weight_decay
    ),
}


class Checkpoints(Protocol):
    """Where a long training keeps its state after each epoch, so that a killed run continues
    from the last finished epoch (the bench's Retrain oracles: up to an hour each on a CPU)."""

    def load(self) -> dict | None: ...  # the last saved state, None when there is none

    def save(self, state: dict) -> None: ...  # must replace the previous state atomically


def augment_batch(x: torch.Tensor, gen: torch.Generator, pad: int = 4) -> torch.Tensor:
    """Random crop after zero padding (one shift per image) and a random horizontal flip.
    Batched tensor ops: on CPU this costs far less than the forward pass."""
    n, _, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=gen)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=gen)
    rows = (dy[:, None] + torch.arange(h)[None, :])[:, None, :, None].expand(
        n, x.shape[1], h, w + 2 * pad
    )
    out = padded.gather(2, rows)
    cols = (dx[:, None] + torch.arange(w)[None, :])[:, None, None, :].expand(n, x.shape[1], h, w)
    out = out.gather(3, cols)
    flip = torch.rand(n, generator=gen) < 0.5
    out[flip] = out[flip].flip(3)
    return out


def train_classifier(
    model: nn.Module,
    data: Split,
    cfg: TrainSettings,
    device: torch.device,
    progress: ProgressFn = no_progress,
    checkpoints: Checkpoints | None = None,
) -> dict[str, float]:
    """Train `model` in place (Adam or SGD, one-cycle schedule); returns final loss and seconds.
    With `checkpoints`, the state after each epoch is saved there, and a saved state is resumed:
    weights, optimiser, schedule and both random streams, so a resumed run ends with the weights
    of one never stopped. Its seconds then add up every run's training time."""
    policy = precision_policy(
        device, cfg.precision
    )  # before any work: an unsupported bf16 fails here
    gen = set_seed(cfg.seed)
    policy.prepare(model.to(device)).train()
    x = to_input(data.x)
    y = torch.from_numpy(data.y)
    n = len(y)
    steps_per_epoch = max(1, int(np.ceil(n / cfg.batch_size)))
    total = cfg.epochs * steps_per_epoch
    opt = OPTIMIZERS[cfg.optimizer](model.parameters(), cfg)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=total)
    t0 = time.perf_counter()
    start, step, before = 0, 0, 0.0
    loss = torch.tensor(0.0)
    state = checkpoints.load() if checkpoints is not None else None
    if state is not None:
        _restore(state, model, opt, sched, gen)
        start, step, before, loss = state["epoch"], state["step"], state["seconds"], state["loss"]
    for epoch in range(start, cfg.epochs):
        perm = torch.randperm(n, generator=gen)
        for b in range(steps_per_epoch):
            idx = perm[b * cfg.batch_size : (b + 1) * cfg.batch_size]
            xb = augment_batch(x[idx], gen) if cfg.augment else x[idx]
            xb, yb = policy.layout(xb.to(device)), y[idx].to(device)
            with policy.autocast(device):
                loss = F.cross_entropy(model(xb), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            step += 1
        if checkpoints is not None:
            checkpoints.save({"epoch": epoch + 1, "step": step, "loss": loss.detach(),
                              "seconds": before + time.perf_counter() - t0,
                              **_training_state(model, opt, sched, gen)})  # fmt: skip
        progress(step, total, {"loss": loss.item()})
    # Weights stay fp32 under autocast; only the layout goes back, so saving and evaluation see the
    # usual model.
    model.to(memory_format=torch.contiguous_format).eval()
    return {"final_loss": loss.item(), "seconds": before + time.perf_counter() - t0,
            "steps": step, "resumed_from_epoch": start, "earlier_seconds": before}  # fmt: skip


Optimizer = torch.optim.Optimizer
Schedule = torch.optim.lr_scheduler.LRScheduler


def _training_state(
    model: nn.Module, opt: Optimizer, sched: Schedule, gen: torch.Generator
) -> dict:
    """Everything the next epoch depends on besides the data: a resume from it is bit for bit."""
    return {"model": model.state_dict(), "opt": opt.state_dict(), "sched": sched.state_dict(),
            "gen": gen.get_state(), "rng": torch.get_rng_state()}  # fmt: skip


def _restore(
    state: dict, model: nn.Module, opt: Optimizer, sched: Schedule, gen: torch.Generator
) -> None:
    model.load_state_dict(state["model"])
    opt.load_state_dict(state["opt"])
    sched.load_state_dict(state["sched"])
    gen.set_state(state["gen"])
    torch.set_rng_state(state["rng"])
