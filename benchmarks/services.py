"""Real services on 127.0.0.1 for the tests and the timings: `mlflow server`, a throw-away
PostgreSQL cluster (Debian's server binaries) and moto's standalone S3 server."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

BIN = Path(sys.executable).parent
AWS = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
       "AWS_DEFAULT_REGION": "us-east-1"}  # fmt: skip


class ServiceError(RuntimeError):
    """A service did not start."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(
    check: Callable[[], bool], what: str, proc: subprocess.Popen, timeout: float = 120
) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if proc.poll() is not None or time.monotonic() > deadline:
            stop(proc)
            raise ServiceError(f"{what} did not start")
        time.sleep(0.3)


def _answers(url: str) -> Callable[[], bool]:
    def check() -> bool:
        try:
            with urllib.request.urlopen(url, timeout=2) as r:
                return r.status == 200
        except OSError:
            return False

    return check


def stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)


def serve_mlflow(tmp: Path, *extra: str, env: dict | None = None) -> tuple[str, subprocess.Popen]:
    """`mlflow server` on a free port (sqlite store in `tmp` unless `extra` names another);
    (url, process) once /health answers."""
    port = free_port()
    proc = subprocess.Popen(
        [
            str(BIN / "mlflow"), "server",
            "--backend-store-uri", f"sqlite:///{tmp}/srv.db",
            "--artifacts-destination", str(tmp / "srv-artifacts"),
            "--host", "127.0.0.1", "--port", str(port), "--workers", "1", *extra,
        ],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        env={**os.environ, **(env or {})},
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    wait_until(_answers(url + "/health"), "mlflow server", proc)
    return url, proc


def pg_bin() -> Path:
    found = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    if not found:
        raise ServiceError("PostgreSQL server binaries missing: install Debian's postgresql")
    return found[-1].parent


@contextmanager
def postgres_cluster(databases: tuple[str, ...] = ()) -> Iterator[str]:
    """A throw-away cluster (trust auth, fsync off); as root it runs as Debian's `postgres` user,
    since the server refuses root. Yields `postgresql://postgres@127.0.0.1:PORT`."""
    pg = pg_bin()
    root = Path(tempfile.mkdtemp(prefix="unlearn-pg-", dir="/tmp"))  # outside a 0700 TMPDIR
    as_user: list[str] = []
    if os.geteuid() == 0:
        shutil.chown(root, "postgres", "postgres")
        as_user = ["runuser", "-u", "postgres", "--"]
    data, port = root / "data", free_port()
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

    try:
        wait_until(ready, "postgres", proc, timeout=60)
        for db in databases:
            create_database(f"postgresql://postgres@127.0.0.1:{port}", db)
        yield f"postgresql://postgres@127.0.0.1:{port}"
    finally:
        stop(proc)
        shutil.rmtree(root, ignore_errors=True)


def create_database(server: str, name: str) -> str:
    port = server.rsplit(":", 1)[1]
    subprocess.run([str(pg_bin() / "createdb"), "-h", "127.0.0.1", "-p", port, "-U", "postgres",
                    name], check=True)  # fmt: skip
    return f"{server}/{name}"


@contextmanager
def moto_s3(bucket: str = "mlflow") -> Iterator[tuple[str, object]]:
    """moto's standalone S3 server with `bucket`; yields (endpoint url, boto3 client)."""
    import boto3

    port = free_port()
    url = f"http://127.0.0.1:{port}"
    proc = subprocess.Popen(
        [str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        env={**os.environ, **AWS},
    )  # fmt: skip
    try:
        wait_until(_answers(url + "/moto-api/"), "moto_server", proc, timeout=60)
        client = boto3.client("s3", endpoint_url=url, aws_access_key_id="testing",
                              aws_secret_access_key="testing", region_name="us-east-1")  # fmt: skip
        client.create_bucket(Bucket=bucket)
        yield url, client
    finally:
        stop(proc)
