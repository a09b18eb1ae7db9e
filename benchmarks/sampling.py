"""A method's seconds projected from the first part of its run (`bench-time --sample-seconds`).

Timing a CIFAR-10 table in full on this CPU takes hours of a quiet machine (Retrain alone about
100 minutes on one thread). Every method's loop is a fixed sequence of optimisation steps known
before it starts, and reports its step count to `progress` (every 10 steps; Retrain once per
epoch). So a run is watched until it has gone `budget` seconds past its first report and then
stopped; the seconds per step measured between reports, times the run's steps, plus its set-up
(the time to its first report less the steps done by then), is its projected time.

Steps of one kind cost alike; a loop whose steps are of different kinds declares its layout
(`LAYOUTS`: SCRUB's max steps on Df's small batches and min steps on Dr's), and each kind gets its
own rate, from intervals that lie within one stretch of that kind. What this cannot see: a cost
that changes along a run without a change of kind (none of the loops here has one; RFA's target
refresh every 100 steps is in the sample once the budget covers 100 steps), and anything after
the last step (none: the result is the model the loop leaves).
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Callable
from dataclasses import dataclass, field
from itertools import accumulate

from components.settings import BaselineSettings
from components.unlearning.sgd_loop import n_batches
from components.unlearning.types import UnlearnTask

Layout = list[tuple[str, int]]  # (kind of step, how many), in the order the loop runs them
Clock = Callable[[], tuple[float, float]]  # (wall seconds, CPU seconds of this process)


def _scrub(task: UnlearnTask, cfg: BaselineSettings) -> Layout:
    """components.unlearning.baselines.scrub: max passes over Df open the first epochs."""
    forget = ("max", n_batches(task.forget, cfg.forget_batch or cfg.batch_size))
    retain = ("min", n_batches(task.retain, cfg.batch_size))
    return [s for e in range(cfg.epochs) for s in ([forget] * (e < cfg.scrub_max_steps) + [retain])]


LAYOUTS: dict[str, Callable[[UnlearnTask, BaselineSettings], Layout]] = {"scrub": _scrub}


class Sampled(Exception):
    """Raised from `progress` to end a run once its sample is enough."""


class LayoutError(ValueError):
    """A declared layout does not add up to the steps the loop reports: it is out of date."""


def _clock() -> tuple[float, float]:
    return time.perf_counter(), time.process_time()


@dataclass
class Sampler:
    """The `progress` of a sampled run: records each report and stops the run (raises `Sampled`)
    once `budget` seconds have passed since the first report and every kind of step has an
    interval. `layout` None: every step alike."""

    budget: float
    layout: Layout | None = None
    clock: Clock = _clock
    start: tuple[float, float] = (0.0, 0.0)
    reports: list[tuple[int, float, float]] = field(default_factory=list)
    total: int = 0
    _ends: list[int] = field(default_factory=list)  # each stretch's last step, from the layout

    def __post_init__(self) -> None:
        self.start = self.clock()

    def __call__(self, step: int, total: int, values: dict[str, float]) -> None:
        if not self.reports:  # a layout out of date fails at once, not after the budget
            self.total = total
            self._ends = list(accumulate(n for _, n in self._layout()))
        self.reports.append((step, *self.clock()))
        if step < total and self.reports[-1][1] - self.reports[0][1] >= self.budget:
            if set(self._rates()) >= {kind for kind, _ in self._layout()}:
                raise Sampled

    def _layout(self) -> Layout:
        if self.layout is None:
            return [("step", self.total)]
        declared = sum(n for _, n in self.layout)
        if declared != self.total:
            raise LayoutError(
                f"the loop reports {self.total} steps, its layout has {declared}: out of date"
            )
        return self.layout

    def _stretch(self, step: int) -> int:
        """Index of the stretch of the layout that step `step` (from 1) belongs to."""
        return min(bisect_left(self._ends, step), len(self._ends) - 1)

    def _rates(self) -> dict[str, tuple[float, float]]:
        """Wall and CPU seconds per step of each kind, from intervals within one stretch."""
        sums: dict[str, list[float]] = {}
        layout = self._layout()
        for (a, wa, ca), (b, wb, cb) in zip(self.reports, self.reports[1:], strict=False):
            i = self._stretch(a + 1)
            if b > a and self._stretch(b) == i:
                s = sums.setdefault(layout[i][0], [0.0, 0.0, 0.0])
                s[0], s[1], s[2] = s[0] + b - a, s[1] + wb - wa, s[2] + cb - ca
        return {k: (w / n, c / n) for k, (n, w, c) in sums.items()}

    def projection(self) -> dict:
        """Projected wall and CPU seconds of the whole run, and what they rest on."""
        rates = self._rates()
        counts: dict[str, int] = {}
        first = self.reports[0][0]
        before: dict[str, int] = {}  # steps of each kind done by the first report
        done = 0
        for kind, n in self._layout():
            counts[kind] = counts.get(kind, 0) + n
            before[kind] = before.get(kind, 0) + max(0, min(n, first - done))
            done += n
        proj = []
        for j in (0, 1):  # wall, CPU
            to_first = self.reports[0][1 + j] - self.start[j]
            setup = to_first - sum(before[k] * rates[k][j] for k in before)
            proj.append(max(setup, 0.0) + sum(counts[k] * rates[k][j] for k in counts))
        return {"seconds": proj[0], "cpu_seconds": proj[1], "steps": self.total,
                "sampled_steps": self.reports[-1][0],
                "sampled_seconds": self.reports[-1][1] - self.start[0],
                "per_step": {k: r[0] for k, r in rates.items()}}  # fmt: skip


def replay(whole: Sampler, budget: float) -> dict | None:
    """The projection a run sampled at `budget` would have made, read off `whole`, a Sampler that
    watched the same run to its end (budget infinite); None if the run would have ended first."""
    times = iter([whole.start, *(r[1:] for r in whole.reports)])  # its start, then each report
    part = Sampler(budget, whole.layout, clock=lambda: next(times))
    for step, *_ in whole.reports:
        try:
            part(step, whole.total, {})
        except Sampled:
            return part.projection()
    return None
