"""The README's main command, end to end: what issue #2 says the demo must show."""

from __future__ import annotations

import json

import pytest
from rich.console import Console

from pipelines.audit import verify
from pipelines.demo import run_demo
from pipelines.workspace import Workspace

pytestmark = pytest.mark.slow


def test_demo_forgets_a_class_and_samples_and_certifies_both(tmp_path, prefect_server):
    summary = tmp_path / "summary.json"
    result = run_demo(
        tmp_path / "ws", summary, forget_class=0, sample_fraction=0.05, console=Console(quiet=True)
    )
    assert result["ok"]
    data = json.loads(summary.read_text())
    cls, smp = data["batches"]
    assert cls["scenario"] == "class" and smp["scenario"] == "sample"
    assert cls["acc_dft"] <= 1.0 and cls["acc_df"] <= 1.0
    assert cls["acc_drt"] >= cls["base"]["acc_drt"] - 1.0
    assert cls["mia_efficacy"] >= 95
    assert smp["acc_dft"] is None and abs(smp["acc_df"] - smp["acc_dt"]) <= 2.5
    assert all(b["gates_passed"] and len(b["certificate_sha256"]) == 64 for b in data["batches"])
    assert data["seconds"] > 0

    ws = Workspace(tmp_path / "ws")
    reg = ws.registry()
    versions = {str(v.version): v for v in reg.versions("digits-cnn")}
    assert sorted(versions) == ["1", "2", "3"]
    assert str(reg.champion("digits-cnn").version) == smp["model_version"] == "3"
    assert versions["1"].tags["kind"] == "base"
    for b in data["batches"]:
        assert verify(ws, reg, "digits-cnn", b["model_version"]).ok
    # dvc.lock of the base stage is committed and bound into the certificates.
    assert ws.git("ls-files", "dvc.lock") == "dvc.lock"
