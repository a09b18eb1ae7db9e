"""The parts every full-weight baseline's SGD loop shares (components/unlearning/baselines.py):
its batches, optimiser, precision wrapper, step and result."""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import torch
from torch import nn

from components.data import Split
from components.models import to_input
from components.runtime import (
    DevicePolicy,
    ProgressFn,
    precision_policy,
    resolve_device,
    set_seed,
)
from components.settings import BaselineSettings
from components.training import augment_batch
from components.unlearning.types import UnlearnResult

Batch = tuple[torch.Tensor, torch.Tensor]


@dataclass(frozen=True)
class Batches:
    """A baseline's batches: shuffled by its own random stream and, where the original model was
    trained with crop + flip (`train.augment`), augmented like its training batches, as the
    references' loaders are (SalUn's `dataset.py`: RandomCrop(32, 4) + RandomHorizontalFlip on
    the train set that Df and Dr are cut from). Without it BatchNorm's train-mode statistics
    alone, with no weight change, cost the pre-trained ResNet-20 3.3-3.7 points of Acc(Dr)
    (benchmarks/notes/baselines-bn.md)."""

    gen: torch.Generator
    device: torch.device
    augment: bool = False

    def once(self, split: Split, batch: int) -> Iterator[Batch]:
        """One shuffled pass; images converted per batch (a whole CIFAR Dr as float is 550 MB)."""
        perm = torch.randperm(len(split), generator=self.gen).numpy()
        for i in range(0, len(perm), batch):
            idx = perm[i : i + batch]
            x = to_input(split.x[idx])
            if self.augment:
                x = augment_batch(x, self.gen)
            yield x.to(self.device), torch.from_numpy(split.y[idx]).to(self.device)

    def forever(self, split: Split, batch: int) -> Iterator[Batch]:
        while True:
            yield from self.once(split, batch)


def n_batches(split: Split, batch: int) -> int:
    return math.ceil(len(split) / batch)


class Ticks:
    """A loop's step count, reported to `progress` every `every` steps and at the last: a
    baseline runs for minutes to hours on a CPU. The loss is read (a device wait) only then."""

    def __init__(self, progress: ProgressFn, total: int, every: int = 10) -> None:
        self.progress, self.total, self.every, self.n = progress, total, every, 0

    def __call__(self, loss: torch.Tensor) -> None:
        self.n += 1
        if self.n % self.every == 0 or self.n == self.total:
            self.progress(self.n, self.total, {"loss": float(loss.detach())})


def sgd(params: Iterator[nn.Parameter], cfg: BaselineSettings) -> torch.optim.SGD:
    return torch.optim.SGD(params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay)


class Under(nn.Module):
    """A model as a baseline's loop calls it: the forward under the run's precision policy
    (`precision`: autocast and memory layout) and fp32 logits out, so every loss, KL and random
    label is computed as in an fp32 run. Under fp32 it is the model itself, bit for bit."""

    def __init__(self, model: nn.Module, policy: DevicePolicy, device: torch.device) -> None:
        super().__init__()
        self.model = policy.prepare(model.to(device))
        self.policy, self.device = policy, device

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with self.policy.autocast(self.device):
            return self.model(self.policy.layout(x)).float()


def start(original: nn.Module, cfg: BaselineSettings, augment: bool) -> tuple[Under, Batches]:
    """A copy of the original to train and its batches. BatchNorm in train mode, as the references
    train: frozen statistics (RFA's policy, right for a low-rank adapter) made plain SGD diverge to
    NaN within 100 steps on the Fashion-MNIST CNN at both FT learning rates of the grid (0.01,
    0.04)."""
    device = resolve_device(cfg.device)
    gen = set_seed(cfg.seed)
    policy = precision_policy(device, cfg.precision)  # before any work: bf16 may be refused
    return Under(copy.deepcopy(original).train(), policy, device), Batches(gen, device, augment)


def step(
    opt: torch.optim.Optimizer, loss: torch.Tensor, on_grads: Callable[[], None] | None = None
) -> None:
    opt.zero_grad(set_to_none=True)
    loss.backward()
    if on_grads is not None:
        on_grads()
    opt.step()


def result(
    model: nn.Module, t0: float, steps: int, device: torch.device, trainable: float = 1.0
) -> UnlearnResult:
    # Weights stay fp32 under autocast; only the layout goes back to the usual one.
    return UnlearnResult(
        model=model.to(memory_format=torch.contiguous_format).to("cpu").eval(),
        adapter={},
        seconds=time.perf_counter() - t0,
        trainable_fraction=trainable,
        steps=steps,
        device=str(device),
    )
