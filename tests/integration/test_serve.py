"""`unlearn serve`: the deletion-batch flow as a Prefect deployment on a schedule, served against
a real Prefect server (`prefect server start` on 127.0.0.1), runs a batch by itself."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from pipelines.intake import submit
from pipelines.store import RequestStore
from tests.conftest import make_workspace

PREFECT = Path(sys.executable).with_name("prefect")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _post(url: str, body: dict) -> list | dict:
    """POST JSON to the Prefect API; a busy server's 503 (seen on a loaded 2-core machine) is
    retried for up to a minute rather than failing the test."""
    req = urllib.request.Request(
        url, json.dumps(body).encode(), {"Content-Type": "application/json"}
    )
    deadline = time.monotonic() + 60
    while True:
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                return json.loads(r.read())
        except urllib.error.HTTPError as err:
            if err.code < 500 or time.monotonic() > deadline:
                raise
            time.sleep(2)


@pytest.fixture
def prefect_api(tmp_path):
    """A Prefect server of its own (its own PREFECT_HOME), stopped with its process group."""
    port = _free_port()
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect-server")}
    env.pop("PREFECT_API_URL", None)
    proc = subprocess.Popen(
        [str(PREFECT), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=env, start_new_session=True,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    api = f"http://127.0.0.1:{port}/api"
    deadline = time.monotonic() + 180  # a busy 2-core machine takes a while to start it
    while True:
        try:
            urllib.request.urlopen(f"{api}/health", timeout=2)
            break
        except OSError:
            assert proc.poll() is None and time.monotonic() < deadline, "no Prefect server"
            time.sleep(0.5)
    yield api
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)


def _serving(tmp_path, api: str, every_seconds: int):
    """A workspace with one class request, and `unlearn serve` on it against `api`."""
    ws = make_workspace(tmp_path)
    stored, _, _ = submit(ws, {"kind": "class", "class_label": 2})
    serve = subprocess.Popen(
        [sys.executable, "-c", "from pipelines.cli import entrypoint; entrypoint()",
         "-w", str(ws.root), "serve", "--every-seconds", str(every_seconds)],
        env={**os.environ, "PREFECT_API_URL": api}, start_new_session=True,
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    return ws, stored, serve


def test_the_served_deployment_runs_a_scheduled_batch(tmp_path, prefect_api):
    ws, stored, serve = _serving(tmp_path, prefect_api, every_seconds=5)
    try:
        deadline = time.monotonic() + 300
        while True:
            with RequestStore(ws.requests_db) as store:
                status = store.get(stored.id).status
            if status == "awaiting_approval":
                break
            assert serve.poll() is None, "unlearn serve stopped"
            assert time.monotonic() < deadline, f"no scheduled batch ran (request {status})"
            time.sleep(1)
    finally:
        os.killpg(serve.pid, signal.SIGKILL)
        serve.wait(timeout=60)
    (deployment,) = _post(f"{prefect_api}/deployments/filter", {})
    assert deployment["name"] == "deletion-batch-digits-cnn"
    assert deployment["schedules"][0]["schedule"]["interval"] == 5.0
    assert deployment["global_concurrency_limit"]["limit"] == 1  # one batch per model
    runs = _post(f"{prefect_api}/flow_runs/filter", {})
    done = [r for r in runs if r["state_type"] == "COMPLETED"]
    assert done and all(r["deployment_id"] == deployment["id"] for r in done)
    reg = ws.registry()
    assert reg.has_alias("digits-cnn", "candidate")


def test_serve_without_a_prefect_server_is_one_line(tmp_path, capsys, monkeypatch):
    from pipelines.cli import main

    ws = make_workspace(tmp_path, train=False)
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    assert main(["-w", str(ws.root), "serve"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "set PREFECT_API_URL to a running Prefect server" in err


def _descendants(pid: int) -> list[int]:
    """Every live process below `pid` (from /proc: no psutil here)."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents[int(stat.parent.name)] = int(fields[1])
    found, frontier = [], [pid]
    while frontier:
        kids = [c for c, p in parents.items() if p in frontier]
        found += kids
        frontier = kids
    return found


def _kill_all(pids: list[int]) -> int:
    """SIGKILL each pid; one that exited on its own since it was listed (a short-lived git or dvc
    child of the flow run) is skipped. Returns how many were killed."""
    killed = 0
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
            killed += 1
        except ProcessLookupError:
            continue
    return killed


def test_a_killed_flow_run_is_recovered_by_the_runners_on_crashed_hook(tmp_path, prefect_api):
    """kill -9 of the flow run's own process while `unlearn serve` lives: the runner marks the
    run Crashed and its on_crashed hook returns the requests to pending, with no other run."""
    ws, stored, serve = _serving(tmp_path, prefect_api, every_seconds=86400)
    try:
        deadline = time.monotonic() + 180
        while not (deployments := _post(f"{prefect_api}/deployments/filter", {})):
            assert serve.poll() is None and time.monotonic() < deadline, "never served"
            time.sleep(0.5)
        _post(f"{prefect_api}/deployments/{deployments[0]['id']}/create_flow_run", {})
        _wait_for(ws, stored.id, "processing", serve)
        assert _kill_all(_descendants(serve.pid)), "no process below serve to kill"
        _wait_for(ws, stored.id, "pending", serve)
    finally:
        os.killpg(serve.pid, signal.SIGKILL)
        serve.wait(timeout=60)
    runs = _post(f"{prefect_api}/flow_runs/filter", {})
    # The one run that started crashed; the rest are the schedule's, a day ahead.
    assert [r["state_type"] for r in runs if r["state_type"] != "SCHEDULED"] == ["CRASHED"]
    with RequestStore(ws.requests_db) as store:
        assert store.get(stored.id).reason.startswith("batch batch-")
        assert store.lease("digits-cnn") is None
    assert not ws.registry().has_alias("digits-cnn", "candidate")


def _wait_for(ws, rid: str, status: str, serve: subprocess.Popen, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while True:
        with RequestStore(ws.requests_db) as store:
            now = store.get(rid).status
        if now == status:
            return
        assert serve.poll() is None, "unlearn serve stopped"
        assert time.monotonic() < deadline, f"request stayed {now}, never {status}"
        time.sleep(0.2)
