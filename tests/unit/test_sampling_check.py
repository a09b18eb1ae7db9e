"""`python -m benchmarks.sampling_check` refuses a method its table chose no lr for (it would
otherwise run the params file's lr and report it as the table's setup)."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from typer.testing import CliRunner

from benchmarks.sampling_check import main


def test_a_method_without_a_chosen_lr_is_refused_in_one_line(tmp_path: Path) -> None:
    (tmp_path / "results.json").write_text(json.dumps({"config": {"lr_chosen": {"scrub": 1e-4}}}))
    app = typer.Typer()
    app.command()(main)
    result = CliRunner().invoke(app, [str(tmp_path), "--methods", "scrub,rfa"])
    assert result.exit_code == 2
    lines = result.output.strip().splitlines()
    assert lines == [f"error: {tmp_path} chose no lr for rfa; pass --lr"]
