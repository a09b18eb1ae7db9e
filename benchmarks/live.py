"""The bench's live display beyond its own bar (one step per grid point or seed run)."""

from __future__ import annotations

from rich.progress import Progress

from components.runtime import ProgressFn


def steps_line(bar: Progress) -> ProgressFn:
    """A line under the bench's bar with the running method's steps: on a CPU one CIFAR-10
    baseline run takes minutes to an hour, the bar itself moves once per run. Not part of the
    points' digest: it shows the steps, it changes none."""
    steps = bar.add_task("  steps", total=None)

    def report(step: int, total: int, values: dict[str, float]) -> None:
        bar.update(steps, completed=step, total=total)

    return report
