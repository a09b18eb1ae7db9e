"""When RFA stops early (method.md 6): on reaching the target, or when it stalls."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass
class StopRule:
    """Judges the accuracy of a fixed forget subset, checked every `check_every` steps.

    Stops with "target" once that accuracy is within `tolerance_pt` of what the target itself
    scores there, or with "stalled" after `patience` checks in a row that did not lower it by more
    than `tolerance_pt` below its best (the adapter has stopped moving Df; more steps only cost
    time). check_every 0 = never check; patience 0 = no stall stop.
    """

    check_every: int
    min_steps: int
    tolerance_pt: float
    patience: int
    target_acc: float
    best: float = math.inf
    stale: int = 0

    def due(self, step: int) -> bool:
        """Whether step `step` (1-based) is a check."""
        return bool(self.check_every) and step >= self.min_steps and step % self.check_every == 0

    def observe(self, acc: float) -> str | None:
        """Record one check's accuracy (percent); the stop reason, or None to go on."""
        improved = self.best - acc > self.tolerance_pt
        self.best, self.stale = (acc, 0) if improved else (self.best, self.stale + 1)
        if acc <= self.target_acc + self.tolerance_pt:
            return "target"
        if self.patience and self.stale >= self.patience:
            return "stalled"
        return None
