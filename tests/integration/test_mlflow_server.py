"""The HTTP path: a real `mlflow server` on 127.0.0.1 as the workspace's registry."""

from __future__ import annotations

import os
import signal
import urllib.request

import pytest

from benchmarks.services import serve_mlflow, stop
from pipelines.cli import main
from tests.conftest import make_workspace


@pytest.fixture
def mlflow_server(tmp_path):
    url, proc = serve_mlflow(tmp_path)
    yield url, proc
    stop(proc)


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


@pytest.fixture
def auth_server(tmp_path):
    """`mlflow server --app-name basic-auth` with users alice and bob (MANAGE by default, so the
    test is about identity, not MLflow's permission model)."""
    ini = tmp_path / "auth.ini"
    ini.write_text(
        "[mlflow]\ndefault_permission = MANAGE\n"
        f"database_uri = sqlite:///{tmp_path}/auth.db\nadmin_username = admin\n"
        "admin_password = admin-password-1234\n"
        "authorization_function = mlflow.server.auth:authenticate_request_basic_auth\n"
    )
    env = {"MLFLOW_AUTH_CONFIG_PATH": str(ini), "MLFLOW_FLASK_SERVER_SECRET_KEY": "test-secret"}
    url, proc = serve_mlflow(tmp_path, "--app-name", "basic-auth", env=env)
    from mlflow.server.auth.client import AuthServiceClient

    os.environ["MLFLOW_TRACKING_USERNAME"] = "admin"
    os.environ["MLFLOW_TRACKING_PASSWORD"] = "admin-password-1234"
    try:
        for user in ("alice", "bob"):
            AuthServiceClient(url).create_user(user, f"{user}-password-1234")
    finally:
        del os.environ["MLFLOW_TRACKING_USERNAME"], os.environ["MLFLOW_TRACKING_PASSWORD"]
    yield url
    stop(proc)


def _as(monkeypatch, user: str, password: str | None = None) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", user)
    monkeypatch.setenv("MLFLOW_TRACKING_PASSWORD", password or f"{user}-password-1234")


def test_the_reviewer_is_the_user_the_mlflow_server_authenticates(
    tmp_path, auth_server, monkeypatch, prefect_server
):
    from pipelines.flow import deletion_batch
    from pipelines.intake import submit
    from pipelines.registry import RegistryError
    from pipelines.review import ReviewError, approve

    monkeypatch.setenv("MLFLOW_TRACKING_URI", auth_server)
    _as(monkeypatch, "bob")
    ws = make_workspace(tmp_path)  # bob registers the base, submits and runs the batch
    reg, name = ws.registry(), ws.settings.registry.model_name
    stored, _, _ = submit(ws, {"kind": "class", "class_label": 2})
    outcome = deletion_batch(str(ws.root))
    assert outcome.status == "awaiting_approval", outcome.reason
    v = outcome.model_version
    assert stored.submitted_by == "bob" and reg.resolve(name, v).tags["batch.ran_by"] == "bob"
    with pytest.raises(ReviewError, match="bob submitted a request of this batch; bob ran"):
        approve(ws, reg, name, v, None)

    _as(monkeypatch, "alice", "wrong-password")  # the server, not the CLI, decides who is who
    with pytest.raises(RegistryError, match="MLflow server at http://127.0.0.1:.* refused alice"):
        approve(ws, ws.registry(), name, v, None)
    _as(monkeypatch, "alice")
    with pytest.raises(ReviewError, match="--reviewer mallory, but the MLflow server authenti"):
        approve(ws, ws.registry(), name, v, "mallory")
    approve(ws, ws.registry(), name, v, None)
    assert ws.registry().resolve(name, v).tags["approved_by"] == "alice"


class _Flaky:
    """An HTTP front for the tracking server that answers 503 to its first `fail` API requests
    and forwards the rest (and /health): a transient failure, as a load balancer gives."""

    def __init__(self, upstream: str, fail: int) -> None:
        import http.server
        import threading

        flaky = self
        self.codes: list[int] = []
        self.fail = fail

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _any(self):
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                if self.path.startswith("/api/") and flaky.codes.count(503) < flaky.fail:
                    flaky.codes.append(503)
                    self.send_response(503)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                req = urllib.request.Request(
                    upstream + self.path, data=body or None, method=self.command,
                    headers={k: v for k, v in self.headers.items() if k.lower() != "host"},
                )  # fmt: skip
                with urllib.request.urlopen(req, timeout=30) as r:
                    data, code = r.read(), r.status
                flaky.codes.append(code)
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            do_GET = do_POST = do_PATCH = do_DELETE = _any

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()


def test_a_transient_5xx_is_retried_by_mlflow_not_fatal(mlflow_server, monkeypatch):
    """MLflow's own retries (pipelines/env.py) carry a batch over a 503; with none it fails."""
    from pipelines.env import QUIET_DEFAULTS
    from pipelines.registry import Registry

    url, _ = mlflow_server
    for key in ("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR"):
        monkeypatch.setenv(key, QUIET_DEFAULTS[key])
    front = _Flaky(url, fail=2)
    reg = Registry(front.url, "unlearning")
    assert reg.client.search_registered_models() == []  # succeeded on the third attempt
    assert front.codes == [200, 503, 503, 200]  # /health, then the call twice refused

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    front = _Flaky(url, fail=1)
    from mlflow.exceptions import MlflowException

    with pytest.raises(MlflowException, match="503"):
        Registry(front.url, "unlearning").client.search_registered_models()
    front.server.shutdown()
