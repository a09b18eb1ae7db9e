"""Progress a person can see: each stage of a batch (and `unlearn train`) reports here; the CLI
shows it as rich progress bars on stderr, and inside a Prefect flow run the same steps go to the
run's log and to a progress artifact in the Prefect UI.

Stages report through a module-level list of sinks rather than through flow parameters: a flow's
parameters are plain values (a served deployment has no terminal), and the flow must not know who
watches it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

# (stage, done, total) -> None. total None: a stage that has started, size unknown.
Sink = Callable[[str, float, "float | None"], None]
SINKS: list[Sink] = []


def report(stage: str, done: float, total: float | None = None) -> None:
    for sink in list(SINKS):
        sink(stage, done, total)


def step_reporter(stage: str) -> Callable[[int, int, dict[str, float]], None]:
    """A components ProgressFn (step, total, values) that reports as `stage`."""

    def progress(step: int, total: int, values: dict[str, float]) -> None:
        report(stage, step, total)

    return progress


@contextmanager
def sink(fn: Sink) -> Iterator[None]:
    SINKS.append(fn)
    try:
        yield
    finally:
        SINKS.remove(fn)


@contextmanager
def progress_bars(console: Console) -> Iterator[None]:
    """Rich bars, one per stage, while the block runs (nothing when stderr is not a terminal)."""
    bars = Progress(
        TextColumn("{task.description:<10}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        disable=not console.is_terminal,
    )
    tasks: dict[str, int] = {}

    def show(stage: str, done: float, total: float | None) -> None:
        if stage not in tasks:
            for earlier in tasks.values():  # a new stage means the earlier ones are done
                t = bars.tasks[earlier]
                bars.update(earlier, completed=t.total or 1, total=t.total or 1)
            tasks[stage] = bars.add_task(stage, total=total)
        bars.update(tasks[stage], completed=done, total=total)

    with bars, sink(show):
        yield
        for task_id in tasks.values():
            t = bars.tasks[task_id]
            bars.update(task_id, completed=t.total or 1, total=t.total or 1)
