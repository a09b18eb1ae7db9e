"""Shared stores on existing engines, started for real on 127.0.0.1: MLflow tracking on
PostgreSQL (Debian's server) with an S3-compatible artifact store (moto's standalone server),
proxied by the MLflow server and direct from the client; the request store on the same
PostgreSQL; the DVC remote in the same bucket (push, pull, purge); a full batch and `audit
verify`."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from benchmarks.services import AWS, moto_s3, postgres_cluster, serve_mlflow, stop
from pipelines.audit import verify
from pipelines.flow import deletion_batch
from pipelines.intake import submit
from pipelines.purge import purge_records
from pipelines.review import approve
from pipelines.snapshot import dir_listing
from tests.conftest import make_workspace


@pytest.fixture(scope="module")
def postgres():
    with postgres_cluster(
        ("mlflow_proxied", "mlflow_direct", "requests_proxied", "requests_direct")
    ) as server:
        yield server


@pytest.fixture(scope="module")
def s3():
    with moto_s3() as (url, client):
        yield url, client


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
    url, proc = serve_mlflow(tmp_path, "--backend-store-uri", store, *args, env=env)
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
        stop(proc)
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
