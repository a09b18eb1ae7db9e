"""Supervised training of a base model (also the engine of the Retrain baseline)."""

from __future__ import annotations

import time

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from components.data import Split
from components.models import to_input
from components.runtime import ProgressFn, no_progress, set_seed
from components.settings import TrainSettings


def train_classifier(model: nn.Module, data: Split, cfg: TrainSettings, device: torch.device,
                     progress: ProgressFn = no_progress) -> dict[str, float]:
    """Train `model` in place with Adam + cosine decay; returns final loss and seconds."""
    gen = set_seed(cfg.seed)
    model.to(device).train()
    x = to_input(data.x)
    y = torch.from_numpy(data.y)
    n = len(y)
    steps_per_epoch = max(1, int(np.ceil(n / cfg.batch_size)))
    total = cfg.epochs * steps_per_epoch
    opt = torch.optim.Adam(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=total)
    t0 = time.perf_counter()
    step = 0
    loss = torch.tensor(0.0)
    for _ in range(cfg.epochs):
        perm = torch.randperm(n, generator=gen)
        for b in range(steps_per_epoch):
            idx = perm[b * cfg.batch_size:(b + 1) * cfg.batch_size]
            xb, yb = x[idx].to(device), y[idx].to(device)
            loss = F.cross_entropy(model(xb), yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            step += 1
            if step % steps_per_epoch == 0:
                progress(step, total, {"loss": loss.item()})
    model.eval()
    return {"final_loss": loss.item(), "seconds": time.perf_counter() - t0, "steps": step}
