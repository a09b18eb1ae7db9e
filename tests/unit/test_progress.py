"""pipelines.progress: stages reported anywhere show as bars on a terminal, and nowhere else."""

from __future__ import annotations

import io

from rich.console import Console

from pipelines.progress import SINKS, progress_bars, report, step_reporter


def test_each_stage_gets_a_bar_that_ends_complete_on_a_terminal():
    buf = io.StringIO()
    with progress_bars(Console(file=buf, force_terminal=True, width=100)):
        report("pin", 0)
        for step in (10, 20, 30):
            step_reporter("unlearn")(step, 30, {})
        report("publish", 0)
    text = buf.getvalue()
    assert "pin" in text and "unlearn" in text and "30/30" in text and "publish" in text
    assert SINKS == []  # the sink leaves with the block


def test_no_bars_when_the_output_is_not_a_terminal():
    buf = io.StringIO()
    with progress_bars(Console(file=buf, force_terminal=False)):
        report("pin", 0)
    assert buf.getvalue() == "" and SINKS == []
