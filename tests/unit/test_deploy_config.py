"""compose.yaml cannot run here (no Docker): its wiring is checked instead. Every service the
stack needs is there, each URL points at a service and a database or bucket that the stack
creates, and every flag passed to mlflow, prefect and unlearn is one those tools accept."""

from __future__ import annotations

import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((ROOT / "compose.yaml").read_text())


def _merged_env(compose: dict, name: str) -> dict[str, str]:
    """A service's environment with its YAML merge keys (`<<: [*aws, *quiet]`) applied."""
    return {k: str(v) for k, v in compose["services"][name]["environment"].items()}


def test_the_stack_has_every_part(compose):
    assert set(compose["services"]) >= {"postgres", "s3", "mlflow", "prefect", "worker"}
    for name in ("mlflow", "prefect", "worker"):
        assert compose["services"][name]["build"] == "."  # the project's own image


def test_urls_point_at_services_and_stores_the_stack_creates(compose):
    services = compose["services"]
    databases = set(re.findall(r"CREATE DATABASE (\w+);", (ROOT / "deploy/initdb.sql").read_text()))
    bucket = re.search(r"mc mb --ignore-existing store/(\S+)", services["buckets"]["command"][0])[1]
    mlflow_args = " ".join(services["mlflow"]["command"])
    worker = _merged_env(compose, "worker")
    pg_urls = [
        re.search(r"--backend-store-uri=(\S+)", mlflow_args)[1],
        _merged_env(compose, "prefect")["PREFECT_API_DATABASE_CONNECTION_URL"],
        worker["REQUEST_STORE"],
    ]
    for url in pg_urls:
        host, db = re.search(r"@([\w-]+)/(\w+)$", url).groups()
        assert host == "postgres" and db in databases, url
    assert len({u.rsplit("/", 1)[1] for u in pg_urls}) == 3  # one database per store
    assert (
        f"s3://{bucket}/" in mlflow_args and f"s3://{bucket}/" in services["worker"]["command"][0]
    )
    assert worker["MLFLOW_TRACKING_URI"] == "http://mlflow:5000"
    assert worker["PREFECT_API_URL"] == "http://prefect:4200/api"
    assert worker["AWS_ENDPOINT_URL"] == _merged_env(compose, "mlflow")["MLFLOW_S3_ENDPOINT_URL"]
    assert worker["AWS_ENDPOINT_URL"] == "http://s3:9000"
    for name in ("mlflow", "prefect", "worker"):
        env = _merged_env(compose, name)
        assert env["DO_NOT_TRACK"] == "true" and env["MLFLOW_DISABLE_TELEMETRY"] == "true", name


def _flags(text: str) -> set[str]:
    return {f.split("=", 1)[0] for f in re.findall(r"(?<![\w-])--[a-z][\w-]*(?:=\S+)?", text)}


def _help(*cmd: str) -> str:
    out = subprocess.run(cmd, capture_output=True, text=True, env={"COLUMNS": "200", "PATH": ""})
    return out.stdout + out.stderr


@pytest.mark.parametrize(
    "service, tool",
    [("mlflow", ["mlflow", "server"]), ("prefect", ["prefect", "server", "start"])],
)
def test_every_flag_given_to_a_server_exists(compose, service, tool):
    given = _flags(" ".join(compose["services"][service]["command"]))
    assert given
    accepted = _flags(_help(str(BIN / tool[0]), *tool[1:], "--help"))
    assert given <= accepted, given - accepted


def test_every_unlearn_command_in_the_worker_exists(compose):
    script = compose["services"]["worker"]["command"][0]
    for call in re.findall(r"unlearn ([^&;|]+)", script):
        words = [w for w in shlex.split(call.replace("$$", "$")) if not w.startswith("/")]
        sub = [w for w in words if not w.startswith("-") and not w.startswith("$")]
        given = {w for w in words if w.startswith("--")}
        text = _help(str(BIN / "unlearn"), *[w for w in sub if w != "fi"][:2], "--help")
        assert "Usage" in text and given <= _flags(text) | {"--workspace"}, (call, text[-300:])
