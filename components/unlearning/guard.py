"""RFA's retain guard (settings.RfaSettings.retain_guard_pt): a rollback, not a gate.

The gates judge a finished result; the guard keeps a run from handing them a model that has lost
retained accuracy. Every few steps the adapter is kept, and the student is scored on a fixed
subset of Dr against the frozen teacher on the same images where a decision needs it: at the end,
and where the stop rule would end the run early. Only the end is judged: RFA's first steps often
dip on Dr and recover (Fashion-MNIST 10 %, seed 0 at lr 0.04: 84.2 at step 20, 92.6 at 150
against the teacher's 92.8; benchmarks/notes/fashion_mnist-sample10.md), so stopping at the
first dip would throw away runs that end well. A run that ends below the floor gets back the
adapter of its latest check within it: the kept adapters are scored then, newest first, until
one passes. Scoring them only then gives the same choice as scoring every check as it comes,
without the passes a run that ends well never reads (on Fashion-MNIST's class table RFA then
takes 0.86-0.88x as long, with the same adapter; benchmarks/notes/fashion_mnist-class0.md). It
reads Dr only (the data the model keeps), never a test, reference or validation split.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

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
    """Keeps the adapter every `every` steps (`hold`), scores the checks a decision needs
    (`observe`) and, when the run ends below the floor, puts back the latest check's adapter that
    passes (`restore`). At most `max_steps / every` adapters are held: LoRA's, a few per cent of
    the model's weights."""

    idx: torch.Tensor  # (M,) indices into the run's Dr (or its retain pool) on the device
    teacher_acc: float  # the original's accuracy on them, percent
    drop_pt: float
    every: int
    last_good: dict[str, torch.Tensor]  # trainable weights at the latest passing scored check
    last_good_step: int = 0
    # (step, trainable weights) of the checks after `last_good_step` not scored yet, oldest first
    held: list[tuple[int, dict[str, torch.Tensor]]] = field(default_factory=list)

    @property
    def floor(self) -> float:
        return self.teacher_acc - self.drop_pt

    def due(self, step: int) -> bool:
        """Whether step `step` (1-based) is a periodic check (the run's end always is one)."""
        return step % self.every == 0

    def hold(self, step: int, student: nn.Module) -> None:
        """Keep the adapter of a periodic check unscored: only a run that ends below the floor
        reads its score, and `restore` computes it then."""
        self.held.append((step, trainable_state(student)))

    def observe(self, step: int, acc: float, student: nn.Module) -> bool:
        """Whether a check at `step` scoring `acc` passed (then its adapter is the one kept, and
        the held ones before it can no longer be the latest that passes). The run's history
        holds the checks' records; the guard keeps only what a rollback needs."""
        passed = acc >= self.floor
        if passed:
            self.last_good, self.last_good_step = trainable_state(student), step
            self.held.clear()
        return passed

    def restore(self, student: nn.Module, score: Callable[[], float]) -> list[tuple[int, float]]:
        """Put back the adapter of the latest check within the floor: each held adapter, newest
        first, is loaded and scored by `score()` (the student's accuracy on the subset) until one
        passes; if none does, the latest passing scored one (the start: step 0). Returns the
        (step, accuracy) of each adapter it scored; `last_good_step` is the step put back."""
        scored = []
        while self.held:
            step, state = self.held.pop()
            _load(student, state)
            acc = score()
            scored.append((step, acc))
            if acc >= self.floor:  # the older held ones can no longer be the latest to pass
                self.last_good, self.last_good_step = state, step
                self.held.clear()
                return scored
        _load(student, self.last_good)
        return scored


def _load(student: nn.Module, state: dict[str, torch.Tensor]) -> None:
    """Copy `state` into `student`'s weights of the same names (the frozen ones are not in it)."""
    with torch.no_grad():
        for n, p in student.named_parameters():
            if n in state:
                p.copy_(state[n])
