"""`unlearn bench --oracles-only` trains each seed's Retrain oracle and nothing else (a GPU machine
trains a table's oracles for a CPU's bench to load), and an oracle trained on another device than
the bench's reports no seconds: a GPU's seconds are no measure of a CPU's methods."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys

import yaml
from rich.console import Console

from benchmarks.harness import BenchRun, run_bench
from components.settings import Settings
from tests.conftest import ROOT

CLI = "from pipelines.cli import entrypoint; entrypoint()"


def _cheap_params(tmp_path) -> tuple:
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["train"]["epochs"] = 2  # the base model; the oracles train --oracle-epochs
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(raw))
    return params, Settings.model_validate(raw)


def test_oracles_only_trains_every_seeds_oracle_and_writes_no_table(tmp_path):
    params, _ = _cheap_params(tmp_path)
    cmd = [sys.executable, "-c", CLI, "bench", "--dataset", "digits", "--scenario", "class",
           "--forget-class", "2", "--seeds", "1,2", "--methods", "retrain,ft",
           "--oracle-epochs", "2", "--oracles-only", "--params", str(params),
           "--out", str(tmp_path / "out")]  # fmt: skip
    done = subprocess.run(cmd, cwd=tmp_path, env={**os.environ, "PYTHONPATH": str(ROOT)},
                          capture_output=True, text=True)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    oracles = tmp_path / ".cache" / "bench" / "oracles"
    seeds = sorted(re.search(r"-s(\d+)-e2-", p.name)[1] for p in oracles.glob("*.safetensors"))
    assert seeds == ["0", "1", "2"]  # the tuning seed's too
    for seed in (0, 1, 2):  # each line names a file that is there
        line = next(x for x in done.stdout.splitlines() if x.startswith(f"seed {seed}: "))
        assert (tmp_path / line.split(": ", 1)[1]).exists()
    meta = json.loads(next(oracles.glob("*-s1-*.json")).read_text())
    assert meta["device"] == "cpu" and meta["seconds"] > 0
    assert not (tmp_path / "out").exists()  # no table, and FT neither tuned nor run
    assert not list((tmp_path / ".cache" / "bench" / "points").rglob("*ft*.json"))


def test_an_oracle_trained_on_another_device_reports_no_seconds(tmp_path):
    _, settings = _cheap_params(tmp_path)
    cache = tmp_path / "cache"

    def retrain_record(out: str) -> dict:
        run = BenchRun(dataset="digits", scenario="class", forget_class=2, seeds=[1],
                       methods=["retrain"], oracle_epochs=2, out=tmp_path / out)  # fmt: skip
        result = run_bench(run, settings, cache, Console(quiet=True))
        return next(r for r in result["records"] if r["method"] == "retrain")

    here = retrain_record("trained-here")
    assert here["seconds"] > 0 and here["cpu_seconds"] > 0
    (meta_path,) = (cache / "oracles").glob("*-s1-*.json")
    meta = json.loads(meta_path.read_text())
    meta_path.write_text(json.dumps({**meta, "device": "cuda"}))  # as one trained on a GPU
    loaded = retrain_record("trained-elsewhere")
    assert loaded["seconds"] is None and loaded["cpu_seconds"] is None
    assert loaded["oracle_cached"] is True
    assert loaded["acc_dr"] == here["acc_dr"] and loaded["acc_df"] == here["acc_df"]
