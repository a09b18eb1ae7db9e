"""RFA's retain guard (settings.RfaSettings.retain_guard_pt): a rollback, not a gate.

The gates judge a finished result; the guard keeps a run from handing them a model that has lost
retained accuracy. Every few steps the student is scored on a fixed subset of Dr against the
frozen teacher on the same images, and the adapter of the latest check within `drop_pt` of it is
kept; if the run ends below that, the kept adapter is put back. Only the end is judged: RFA's
first steps often dip on Dr and recover (Fashion-MNIST 10 %, seed 0 at lr 0.04: 84.2 at step
20, 92.6 at 150 against the teacher's 92.8; benchmarks/notes/fashion_mnist-sample10.md), so
stopping at the first dip would throw away runs that end well. It reads Dr only (the data the
model keeps), never a test, reference or validation split.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


def spaced_subset(n: int, size: int, device: torch.device) -> torch.Tensor:
    """`size` indices evenly spaced over range(n): fixed without a random draw, so adding the
    guard leaves every later draw of a seeded run, and so any run it never restores, unchanged."""
    return torch.linspace(0, n - 1, min(n, size)).round().long().unique().to(device)


def trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """A copy of the weights that train (the LoRA adapter's): what a rollback restores."""
    return {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}


@dataclass
class RetainGuard:
    """Scores a fixed Dr subset every `every` steps and at the end; keeps the latest passing
    adapter, which `restore` puts back when the run ends below the floor."""

    idx: torch.Tensor  # (M,) indices into the run's Dr (or its retain pool) on the device
    teacher_acc: float  # the original's accuracy on them, percent
    drop_pt: float
    every: int
    last_good: dict[str, torch.Tensor]  # trainable weights at the latest passing check
    last_good_step: int = 0

    @property
    def floor(self) -> float:
        return self.teacher_acc - self.drop_pt

    def due(self, step: int) -> bool:
        """Whether step `step` (1-based) is a periodic check (the run's end always is one)."""
        return step % self.every == 0

    def observe(self, step: int, acc: float, student: nn.Module) -> bool:
        """Whether a check at `step` scoring `acc` passed (then its adapter is the one kept). The
        run's history holds the checks' records; the guard keeps only what a rollback needs."""
        passed = acc >= self.floor
        if passed:
            self.last_good, self.last_good_step = trainable_state(student), step
        return passed

    def restore(self, student: nn.Module) -> int:
        """Put the kept adapter back into `student`; the step it was kept at (0: the start)."""
        with torch.no_grad():
            for n, p in student.named_parameters():
                if n in self.last_good:
                    p.copy_(self.last_good[n])
        return self.last_good_step
