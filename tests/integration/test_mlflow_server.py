"""The HTTP path: a real `mlflow server` on 127.0.0.1 as the workspace's registry."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from pipelines.cli import main
from tests.conftest import make_workspace


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def mlflow_server(tmp_path):
    port = _free_port()
    mlflow_bin = Path(sys.executable).parent / "mlflow"
    proc = subprocess.Popen(
        [
            str(mlflow_bin),
            "server",
            "--backend-store-uri",
            f"sqlite:///{tmp_path}/srv.db",
            "--artifacts-destination",
            str(tmp_path / "srv-artifacts"),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        try:
            with urllib.request.urlopen(url + "/health", timeout=2) as r:
                if r.status == 200:
                    break
        except OSError:
            pass
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail("mlflow server did not start")
        time.sleep(0.5)
    yield url, proc
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)


def test_registry_over_http_then_server_down(tmp_path, mlflow_server, monkeypatch, capsys):
    url, proc = mlflow_server
    monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
    ws = make_workspace(tmp_path)  # trains and registers the base model through the server
    assert not (ws.root / "mlflow.db").exists()  # nothing went to the local sqlite store
    assert main(["-w", str(ws.root), "audit", "verify", "digits-cnn", "1"]) == 0
    assert "verifies" in capsys.readouterr().out
    # The server dies (SIGKILL: a crash, and no wait on a graceful shutdown that took over 30 s
    # on a loaded machine); what matters is the client's one-line answer once it is gone.
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=60)
    assert main(["-w", str(ws.root), "audit", "verify", "digits-cnn", "1"]) == 2
    err = capsys.readouterr().err.strip()
    assert (
        err.startswith("error: MLflow tracking server at http://127.0.0.1") and "unreachable" in err
    )
