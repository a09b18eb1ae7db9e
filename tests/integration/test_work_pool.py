"""Two models' deletion batches on a Prefect process work pool with two workers (real Prefect
server, real `prefect worker` processes): both run at once, each certified in its workspace, and
a second run of one model asked for at the same moment waits for the first and then refuses (its
candidate awaits review) instead of running beside it.
Docker and Kubernetes pools take the same deployment with an image (configuration only: neither
Docker nor a cluster runs here, so no worker of theirs is started)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from pipelines.audit import verify
from pipelines.deploy import create_pool
from pipelines.intake import submit
from pipelines.store import RequestStore
from tests.conftest import make_workspace

BIN = Path(sys.executable).parent
FINAL = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}


def _api_url() -> str:
    from prefect.settings import get_current_settings

    return str(get_current_settings().api.url)


def _worker(pool: str, home: Path, n: int) -> subprocess.Popen:
    env = {**os.environ, "PREFECT_API_URL": _api_url(), "PREFECT_HOME": str(home / f"w{n}"),
           "PREFECT_WORKER_QUERY_SECONDS": "1"}  # fmt: skip
    log = (home / f"worker{n}.log").open("w")
    cmd = [str(BIN / "prefect"), "worker", "start", "--pool", pool, "--type", "process",
           "--limit", "1", "--name", f"worker-{n}"]  # fmt: skip
    return subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT,
                            start_new_session=True)  # fmt: skip


def _stop(worker: subprocess.Popen) -> None:
    """SIGTERM, then SIGKILL after 60 s: on a loaded machine a worker has taken longer than that to
    shut down (2026-12-04), and its shutdown is not what these tests assert."""
    os.killpg(worker.pid, signal.SIGTERM)
    try:
        worker.wait(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(worker.pid, signal.SIGKILL)
        worker.wait(timeout=60)


def _wait_for(run_ids: list, timeout: float = 900.0) -> list:
    from prefect.client.orchestration import get_client

    deadline = time.monotonic() + timeout
    with get_client(sync_client=True) as client:
        while True:
            runs = [client.read_flow_run(r) for r in run_ids]
            if all(r.state.type.value in FINAL for r in runs):
                return runs
            if time.monotonic() > deadline:
                pytest.fail(f"flow runs still {[r.state.name for r in runs]}")
            time.sleep(2)


def test_two_workers_run_two_models_at_once_and_one_model_once(tmp_path, prefect_server):
    from prefect.deployments import run_deployment

    from pipelines.deploy import deploy_batches, deployment_name

    workspaces = []
    for model, label in (("digits-a", 3), ("digits-b", 7)):
        (tmp_path / model).mkdir()
        ws = make_workspace(tmp_path / model, {"registry": {"model_name": model}})
        submit(ws, {"kind": "class", "class_label": label})
        workspaces.append(ws)
    create_pool("unlearn-pool", "process")
    for ws in workspaces:
        deploy_batches(ws, "unlearn-pool")
    workers = [_worker("unlearn-pool", tmp_path, n) for n in (1, 2)]
    try:
        runs = [
            run_deployment(f"deletion-batch/{deployment_name(ws)}", timeout=0)
            for ws in (*workspaces, workspaces[0])  # model a twice
        ]
        done = _wait_for([r.id for r in runs])
    finally:
        for w in workers:
            _stop(w)
    logs = "".join((tmp_path / f"worker{n}.log").read_text() for n in (1, 2))
    a, b, again = done
    assert [a.state.type.value, b.state.type.value] == ["COMPLETED", "COMPLETED"], logs[-3000:]
    assert a.start_time < b.end_time and b.start_time < a.end_time  # they overlapped
    # The same model's second run waited for the deployment's slot, then found the candidate
    # awaiting review: it never ran beside the first.
    assert again.state.type.value == "FAILED", again.state.name
    assert "awaits review" in again.state.message, again.state.message
    assert again.start_time >= a.end_time
    for ws in workspaces:
        with RequestStore(ws.requests_db) as store:
            (req,) = store.list()
        assert req.status == "awaiting_approval"
        reg, name = ws.registry(), ws.settings.registry.model_name
        report = verify(ws, reg, name, req.model_version)
        assert report.ok, report.problems


@pytest.mark.parametrize("kind", ["docker", "kubernetes"])
def test_a_container_pool_takes_the_deployment_with_an_image(tmp_path, prefect_server, kind):
    from prefect.client.orchestration import get_client

    from pipelines.deploy import deploy_batches

    ws = make_workspace(tmp_path, {"registry": {"model_name": f"digits-{kind}"}}, train=False)
    create_pool(f"unlearn-{kind}", kind)
    dep_id = deploy_batches(ws, f"unlearn-{kind}", image="certified-unlearning:latest",
                            workspace_path="/home/app/ws")  # fmt: skip
    with get_client(sync_client=True) as client:
        dep = client.read_deployment(dep_id)
        pool = client.read_work_pool(f"unlearn-{kind}")
    assert "image" in pool.base_job_template["variables"]["properties"]
    assert dep.work_pool_name == f"unlearn-{kind}" and dep.global_concurrency_limit.limit == 1
    assert dep.job_variables["image"] == "certified-unlearning:latest"
    assert dep.parameters == {
        "workspace": "/home/app/ws",
        "model": f"digits-{kind}",
        "scheduled": False,
    }
    assert dep.entrypoint == "pipelines.flow.deletion_batch"
