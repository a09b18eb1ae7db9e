"""`python -m benchmarks.scrub_trace`: a bad --scenario or a --shared folder without CIFAR-10 and
the checkpoint is refused in one line, before any data is read."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--scenario", "nope"], "'nope': sample or class"),
        (["--shared", "/nonexistent"], "/nonexistent/datasets/cifar10 is missing"),
    ],
)
def test_bad_input_is_one_line_and_no_work(args, needle):
    run = subprocess.run(
        [sys.executable, "-m", "benchmarks.scrub_trace", *args],
        cwd=ROOT, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert run.returncode == 2, run.stderr
    assert needle in " ".join(run.stderr.split())  # typer's box may wrap the line
    assert run.stdout == ""  # no check printed: nothing was loaded or trained
