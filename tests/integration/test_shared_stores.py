"""Shared stores on existing engines, started for real on 127.0.0.1: MLflow tracking on
PostgreSQL (Debian's server) with an S3-compatible artifact store (moto's standalone server),
proxied by the MLflow server and direct from the client; the request store on the same
PostgreSQL; the DVC remote in the same bucket (push, pull, purge); a full batch and `audit
verify`."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import pytest

from pipelines.audit import verify
from pipelines.flow import deletion_batch
from pipelines.intake import submit
from pipelines.purge import purge_records
from pipelines.review import approve
from pipelines.snapshot import dir_listing
from tests.conftest import make_workspace
from tests.integration.test_mlflow_server import _free_port, _serve, _stop

BIN = Path(sys.executable).parent
AWS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
       "AWS_DEFAULT_REGION": "us-east-1"}  # fmt: skip


def _pg_bin() -> Path:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    if not found:
        pytest.fail(
            "PostgreSQL server binaries missing: install Debian's postgresql (.ci/run does)"
        )
    return found[-1].parent


def _wait(check, what: str, proc: subprocess.Popen, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if proc.poll() is not None or time.monotonic() > deadline:
            pytest.fail(f"{what} did not start")
        time.sleep(0.3)


@pytest.fixture(scope="module")
def postgres():
    """A throw-away cluster; as root, run as Debian's `postgres` user (the server refuses root)."""
    pg = _pg_bin()
    root = Path(tempfile.mkdtemp(prefix="unlearn-pg-", dir="/tmp"))  # outside a 0700 TMPDIR
    as_user: list[str] = []
    if os.geteuid() == 0:
        shutil.chown(root, "postgres", "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    data, port = root / "data", _free_port()
    subprocess.run([*as_user, str(pg / "initdb"), "-D", str(data), "-A", "trust", "-U",
                    "postgres", "--no-sync"], check=True, capture_output=True)  # fmt: skip
    proc = subprocess.Popen(
        [*as_user, str(pg / "postgres"), "-D", str(data), "-h", "127.0.0.1", "-p", str(port),
         "-k", str(root), "-c", "fsync=off"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
    )  # fmt: skip

    def ready() -> bool:
        ping = [str(pg / "pg_isready"), "-h", "127.0.0.1", "-p", str(port)]
        return subprocess.run(ping, capture_output=True).returncode == 0

    _wait(ready, "postgres", proc)
    for db in ("mlflow_proxied", "mlflow_direct", "requests_proxied", "requests_direct"):
        subprocess.run([str(pg / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U",
                        "postgres", db], check=True)  # fmt: skip
    yield f"postgresql://postgres@127.0.0.1:{port}"
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def s3():
    """moto's standalone S3 server with a bucket."""
    import boto3

    port = _free_port()
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        env={**os.environ, **AWS},
    )  # fmt: skip

    def ready() -> bool:
        try:
            with urllib.request.urlopen(url + "/moto-api/", timeout=2):
                return True
        except OSError:
            return False

    _wait(ready, "moto_server", proc)
    client = boto3.client("s3", endpoint_url=url, **_boto_keys())
    client.create_bucket(Bucket="mlflow")
    yield url, client
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)


def _boto_keys() -> dict:
    return {"aws_access_key_id": "testing", "aws_secret_access_key": "testing",
            "region_name": "us-east-1"}  # fmt: skip


@pytest.mark.parametrize("mode", ["proxied", "direct"])
def test_a_batch_through_mlflow_on_postgresql_and_s3(
    tmp_path, postgres, s3, mode, monkeypatch, prefect_server
):
    s3_url, client = s3
    # MLFLOW_S3_ENDPOINT_URL: MLflow's S3 client; AWS_ENDPOINT_URL: DVC's (s3fs via botocore).
    env = {**AWS, "MLFLOW_S3_ENDPOINT_URL": s3_url, "AWS_ENDPOINT_URL": s3_url}
    store = f"{postgres}/mlflow_{mode}"
    args = (
        ["--artifacts-destination", "s3://mlflow/proxied"]
        if mode == "proxied"
        else ["--no-serve-artifacts", "--default-artifact-root", "s3://mlflow/direct"]
    )
    url, proc = _serve(tmp_path, "--backend-store-uri", store, *args, env=env)
    try:
        for k, v in {**env, "MLFLOW_TRACKING_URI": url}.items():
            monkeypatch.setenv(k, v)  # direct: the client itself writes to S3 (boto3)
        requests = f"{postgres}/requests_{mode}"
        origin = tmp_path / "history.git"  # the workspace's git remote (any URL git pushes to)
        subprocess.run(["git", "init", "-q", "--bare", str(origin)], check=True)
        ws = make_workspace(tmp_path, remote=f"s3://mlflow/dvc-{mode}", request_store=requests,
                            git_remote=str(origin))  # fmt: skip
        reg, name = ws.registry(), ws.settings.registry.model_name
        submit(ws, {"kind": "class", "class_label": 8})
        outcome = deletion_batch(str(ws.root))
        assert outcome.status == "awaiting_approval", outcome.reason
        report = verify(ws, reg, name, outcome.model_version)
        assert report.ok, report.problems
        in_bucket = _dvc_objects(client, mode)
        approve(ws, reg, name, outcome.model_version, "alice")
        after = verify(ws, reg, name, outcome.model_version)
        assert after.ok, after.problems
        _clone_and_pull(ws, origin, tmp_path / "elsewhere")
    finally:
        _stop(proc)
    keys = [o["Key"] for o in client.list_objects_v2(Bucket="mlflow", Prefix=mode)["Contents"]]
    assert any(k.endswith("model/artifacts/weights.safetensors") for k in keys)
    assert any(k.endswith("report/report.html") for k in keys)
    assert not (ws.root / "mlflow.db").exists() and not (ws.root / "mlartifacts").exists()
    import psycopg

    with psycopg.connect(store) as db:
        (n,) = db.execute("SELECT count(*) FROM model_versions").fetchone()
    assert n == 2  # the base and the certified version, in PostgreSQL
    with psycopg.connect(requests) as db:
        rows = db.execute("SELECT status, submitted_by FROM requests").fetchall()
    assert [r[0] for r in rows] == ["certified"]  # the request store is the PostgreSQL one
    assert not (ws.root / ".unlearn" / "requests.db").exists()
    erased = {o for r in purge_records(ws) for o in r["objects"]}
    assert erased and erased <= in_bucket  # the erased samples' objects were pushed, and
    assert not erased & _dvc_objects(client, mode)  # approval purged them from the bucket


def _dvc_objects(client, mode: str) -> set[str]:
    """md5s of the objects in the DVC remote (keys `dvc-MODE/files/md5/ab/cdef...`)."""
    pages = client.get_paginator("list_objects_v2").paginate(Bucket="mlflow", Prefix=f"dvc-{mode}/")
    keys = [o["Key"] for page in pages for o in page.get("Contents", [])]
    return {k.split("/")[-2] + k.split("/")[-1] for k in keys}


def _clone_and_pull(ws, origin: Path, where: Path) -> None:
    """Another machine: the history from the git remote (every commit of the batch and the
    approval pushed), every retained sample from the bucket, none of the erased ones."""
    from dvc.repo import Repo

    head = ws.git("rev-parse", "HEAD")
    assert subprocess.run(["git", "--git-dir", str(origin), "rev-parse", "main"], text=True,
                          capture_output=True, check=True).stdout.strip() == head  # fmt: skip
    subprocess.run(["git", "clone", "-q", "-b", "main", str(origin), str(where)], check=True)
    with Repo(str(where)) as repo:
        repo.pull()
    data = where / ws.data_dir.relative_to(ws.root)
    files = sorted(str(p.relative_to(data)) for p in data.rglob("*") if p.is_file())
    assert files == sorted(e["relpath"] for e in dir_listing(ws, "HEAD"))
