"""A bench killed with `kill -9` resumes from the points it finished and ends with the numbers of a
run that was never stopped (benchmarks/points.py); two processes needing one oracle train it once
(benchmarks/cache.py)."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import torch
import yaml
from rich.console import Console

from benchmarks import cache as bench_cache
from benchmarks.harness import BenchRun, run_bench
from benchmarks.points import Points, code_digest, own_settings
from components.models import build_model, make_spec
from components.settings import Settings
from components.unlearning.types import MethodConfig, UnlearnResult, UnlearnTask
from tests.conftest import ROOT

CLI = "from pipelines.cli import entrypoint; entrypoint()"
TIMING = {"seconds", "cpu_seconds", "oracle_cached", "load_1m"}  # the machine, not the data


def _numbers(result: dict) -> tuple:
    records = [{k: v for k, v in r.items() if k not in TIMING} for r in result["records"]]
    return records, result["config"]["tuning"]


def _bench_cmd(params: Path, out: Path) -> list[str]:
    return [sys.executable, "-c", CLI, "bench", "--dataset", "digits", "--scenario", "class",
            "--forget-class", "2", "--seeds", "1", "--methods", "ft,retrain",
            "--oracle-epochs", "3", "--params", str(params), "--out", str(out)]  # fmt: skip


def _wait_for_points(proc: subprocess.Popen, folder: Path, at_least: int) -> None:
    while proc.poll() is None:
        found = list(folder.glob("*/tune-ft-*.json")) if folder.exists() else []
        if len(found) >= at_least:
            return
        time.sleep(0.2)
    raise AssertionError(f"the bench ended (exit {proc.returncode}) before {at_least} points")


def test_a_killed_bench_resumes_and_matches_a_run_never_stopped(tmp_path):
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["train"]["epochs"] = 3
    recipes = {**Settings().bench.recipes, "ft": {"epochs": 2, "batch_size": 256}}
    raw["bench"] = {"recipes": recipes}
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(raw))
    settings = Settings.model_validate(raw)  # cheap but whole: Retrain, FT's five-point grid
    run = BenchRun(
        dataset="digits", scenario="class", forget_class=2, seeds=[1], methods=["ft", "retrain"],
        oracle_epochs=3, out=tmp_path / "never-stopped",
    )  # fmt: skip
    whole = run_bench(run, settings, tmp_path / "other-cache", Console(quiet=True))

    work = tmp_path / "work"  # `unlearn bench` caches under ./.cache/bench
    work.mkdir()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    points = work / ".cache" / "bench" / "points"
    proc = subprocess.Popen(_bench_cmd(params, work / "out"), cwd=work, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)  # fmt: skip
    _wait_for_points(proc, points, at_least=2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    (folder,) = points.iterdir()
    finished = sorted(p.name for p in folder.glob("*.json"))
    assert len(finished) >= 2 and all(json.loads(p.read_text()) for p in folder.glob("*.json"))

    done = subprocess.run(_bench_cmd(params, work / "out"), cwd=work, env=env,
                          capture_output=True, text=True)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    resumed = json.loads((work / "out" / "results.json").read_text())
    assert _numbers(resumed) == _numbers(whole)
    assert resumed["config"]["points"]["reused"] >= len(finished)
    assert "Resumed" in (work / "out" / "results.md").read_text()
    # Stamped with the code that ran, the digest its points are keyed on (benchmarks/provenance).
    (stamp,) = resumed["provenance"]
    assert stamp["command"] == "bench" and stamp["code_digest"] == code_digest()[:16]
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True,
                          text=True)  # fmt: skip
    assert stamp["commit"] == (head.stdout.strip() if head.returncode == 0 else None)
    assert not list(folder.glob(".*.tmp"))  # every point whole: none left half-written
    # Piped, as to a log file: a line for each point read back and for each point it finished.
    lines = done.stdout.splitlines()
    for p in folder.glob("*.json"):
        mine = [ln for ln in lines if f"{p.stem}: finished" in ln]
        reused = p.name in finished
        assert mine and all(("earlier run" in ln) == reused for ln in mine), (p.stem, mine)
        # ... each one timed line as written, never padded to a width
        assert all(ln == ln.rstrip() and re.match(r"\d\d:\d\d:\d\d ", ln) for ln in mine), mine


def test_points_are_per_configuration_data_and_code(tmp_path):
    config = {"dataset": "digits", "rfa": {"lr": 0.01}, "seeds": [1], "methods": ["ft"]}
    data = {"train": "a", "reference": "b"}
    base = Points.for_run(tmp_path, config, data, "code")
    # What a run reports (its seeds and methods) is not what a point is: runs share points.
    other_run = {**config, "seeds": [2, 3], "methods": ["rl"]}
    assert Points.for_run(tmp_path, other_run, data, "code") == base
    for other in (
        Points.for_run(tmp_path, {**config, "bench": {"loss_mia_folds": 5}}, data, "code"),
        Points.for_run(tmp_path, config, {**data, "reference": "c"}, "code"),
        Points.for_run(tmp_path, config, data, "other code"),
    ):
        assert other.folder != base.folder
    # A setting only one method reads names that method's points, not the folder.
    recipes = {"ft": {"epochs": 10}, "rl": {"epochs": 10}}
    full = {**config, "lora": {"rank": 2}, "recipes": recipes}
    retuned = {**full, "rfa": {"lr": 0.02}, "lora": {"rank": 4}}
    assert Points.for_run(tmp_path, retuned, data, "code") == Points.for_run(
        tmp_path, full, data, "code"
    )
    assert own_settings(retuned, "ft") == own_settings(full, "ft")
    assert own_settings(retuned, "rfa") != own_settings(full, "rfa")
    longer_ft = {**full, "recipes": {**recipes, "ft": {"epochs": 20}}}
    assert own_settings(longer_ft, "ft") != own_settings(full, "ft")
    assert own_settings(longer_ft, "rl") == own_settings(full, "rl")
    assert base.get("tune-ft-lr0.01") is None
    base.put("tune-ft-lr0.01", {"m": {"acc_df": torch.tensor(1.5).numpy()[()]}})
    assert base.get("tune-ft-lr0.01") == {"m": {"acc_df": 1.5}}
    assert [p.name for p in base.folder.iterdir()] == ["tune-ft-lr0.01.json"]  # no temporary left


def test_the_code_digest_follows_every_measuring_source(tmp_path):
    sources = ["components/unlearning/baselines.py", "benchmarks/harness.py", "benchmarks/cache.py",
               "benchmarks/selection.py", "benchmarks/shadows.py"]  # fmt: skip
    for name in sources:
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text("x = 1\n")
    before = code_digest(tmp_path)
    baselines = tmp_path / "components/unlearning/baselines.py"
    baselines.write_text('"""A docstring."""\n\nx = 1  # a comment\n')
    assert code_digest(tmp_path) == before  # words about the code are not the code
    baselines.write_text("x = 2\n")
    assert code_digest(tmp_path) != before
    # The settings' values enter through the config, not through the source's text.
    (tmp_path / "components/settings.py").write_text("grid = (1, 2)\n")
    changed = code_digest(tmp_path)
    (tmp_path / "components/settings.py").write_text("grid = (1, 3)\n")
    assert code_digest(tmp_path) == changed
    assert code_digest() == code_digest(ROOT)  # the repository's own sources by default


def test_a_second_process_waits_for_the_oracle_being_trained_and_loads_it(tmp_path, digits):
    spec = make_spec("small_cnn", digits.train.x[:64], digits.num_classes, 8)
    trained = build_model(spec)
    path = tmp_path / "oracles" / "key"
    calls = threading.Event()

    def runner(*_):  # the waiting process must not train the oracle again
        calls.set()
        raise AssertionError("trained an oracle another process was training")

    task = UnlearnTask("class", digits.train, digits.train, digits.heldout, (0,))
    cfg = MethodConfig()  # never read: the runner is not called
    got: dict = {}

    def wait_and_load() -> None:
        got["model"], got["meta"] = bench_cache.oracle(trained, task, cfg, spec, path, runner)

    with bench_cache.only_one_trainer(path):  # the other process, mid-training
        waiter = threading.Thread(target=wait_and_load)
        waiter.start()
        assert not calls.wait(2.0)  # without the lock it would have started training by now
        bench_cache._save_model(path, trained, {"seconds": 1.0})
    waiter.join()
    assert not calls.is_set() and got["meta"]["oracle_cached"] is True
    pairs = zip(got["model"].state_dict().values(), trained.state_dict().values(), strict=True)
    assert all(torch.equal(a, b) for a, b in pairs)


def test_a_bench_killed_mid_oracle_resumes_it_and_saves_the_never_stopped_weights(tmp_path):
    """A CIFAR-10 oracle is an hour of training: a `kill -9` at epoch k must cost the epoch under
    way, not the k before it, and the resumed oracle must be the one a run never stopped makes."""
    raw = yaml.safe_load((ROOT / "params.yaml").read_text())
    raw["train"]["epochs"] = 3  # the base model; the oracle trains --oracle-epochs
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(raw))
    cmd = [sys.executable, "-c", CLI, "bench", "--dataset", "digits", "--scenario", "class",
           "--forget-class", "2", "--seeds", "1", "--methods", "retrain", "--oracle-epochs", "12",
           "--params", str(params)]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    runs = {}
    for name in ("never-stopped", "killed"):
        (tmp_path / name).mkdir()
        runs[name] = [*cmd, "--out", str(tmp_path / name / "out")]
    subprocess.run(runs["never-stopped"], cwd=tmp_path / "never-stopped", env=env, check=True,
                   capture_output=True)  # fmt: skip

    oracles = tmp_path / "killed" / ".cache" / "bench" / "oracles"
    proc = subprocess.Popen(runs["killed"], cwd=tmp_path / "killed", env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    epochs = None
    while proc.poll() is None and epochs is None:
        found = list(oracles.glob("*.epochs")) if oracles.exists() else []
        if found and bench_cache.EpochFile(found[0]).load()["epoch"] >= 2:
            epochs = found[0]
        time.sleep(0.05)
    assert epochs is not None, "the bench ended before its oracle had saved two epochs"
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    saved = bench_cache.EpochFile(epochs).load()["epoch"]
    assert 2 <= saved < 12 and not epochs.with_suffix(".safetensors").exists()

    done = subprocess.run(runs["killed"], cwd=tmp_path / "killed", env=env, capture_output=True,
                          text=True)  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    theirs = tmp_path / "never-stopped" / ".cache" / "bench" / "oracles" / epochs.name
    weights = epochs.with_suffix(".safetensors")  # the same, bit for bit
    assert weights.read_bytes() == theirs.with_suffix(".safetensors").read_bytes()
    meta = json.loads(epochs.with_suffix(".json").read_text())
    assert meta["resumed"] is True and meta["cpu_seconds"] is None  # this run saw part of it
    assert not list(oracles.glob("*.epochs")) and not list(oracles.glob(".*.tmp"))


def test_oracles_first_skips_an_oracle_another_process_trains_and_trains_the_free_one(
    tmp_path, digits
):
    """How two processes over one table train two seeds' oracles at once (harness's
    `_oracles_first`): an oracle locked by the other process is passed over without waiting."""
    spec = make_spec("small_cnn", digits.train.x[:64], digits.num_classes, 8)
    original = build_model(spec)
    task = UnlearnTask("class", digits.train, digits.train, digits.heldout, (0,))
    trained = []

    def runner(name, model, task, cfg):
        trained.append(name)
        return UnlearnResult(model, {}, 1.0, 1.0, 1, "cpu"), 1.0

    busy, free = tmp_path / "oracles" / "seed0", tmp_path / "oracles" / "seed1"
    with bench_cache.only_one_trainer(busy):  # the other process, mid-training seed 0's
        # In a thread, so that a call which waited for the lock fails this test, not hangs it.
        answer = []
        call = threading.Thread(target=lambda: answer.append(bench_cache.train_oracle_if_free(
            original, task, MethodConfig(), spec, busy, runner)), daemon=True)  # fmt: skip
        call.start()
        call.join(timeout=10.0)
        assert not call.is_alive(), "it waited for the other process's lock"
        assert answer == [False] and trained == []  # passed over, not trained
        assert bench_cache.train_oracle_if_free(original, task, MethodConfig(), spec, free, runner)
    assert trained == ["retrain"] and free.with_suffix(".safetensors").exists()
    assert not busy.with_suffix(".safetensors").exists()
    # Cached now: nothing to train, and the oracle a method asks for is the one saved.
    assert not bench_cache.train_oracle_if_free(original, task, MethodConfig(), spec, free, runner)
    _, meta = bench_cache.oracle(original, task, MethodConfig(), spec, free, runner)
    assert trained == ["retrain"] and meta["oracle_cached"] is True
