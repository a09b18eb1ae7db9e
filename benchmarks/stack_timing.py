"""One deletion batch on the embedded stores against the shared ones, and through a Prefect
process work pool, side by side in one run (arms interleaved, repeats alternated):

- `sqlite`: the default (MLflow sqlite + local artifacts, sqlite request store, local DVC remote);
- `http+sqlite`: an `mlflow server` on sqlite in between (what HTTP alone costs);
- `pg+s3`: `mlflow server` on PostgreSQL with S3 artifacts (moto), the request store on the same
  PostgreSQL, the DVC remote in the same bucket;
- `pool`: the `sqlite` arm's batch run by a `prefect worker` on a process pool (submit to done,
  as the client sees it), the worker already started.

    .venv/bin/python -m benchmarks.stack_timing [--repeats 2] [--out DIR]

After one untimed warm-up batch, each repeat trains a fresh base model (not timed), then times
the batch (`deletion_batch`, class request) and the approval (verify, purge, alias move).
Writes results.json and table.md. Timings, not a test; this machine is noisy, so the ratios
within one run are what to read.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

import typer
import yaml

from pipelines.env import quiet_environment
from pipelines.workspace import Workspace

ROOT = Path(__file__).resolve().parent.parent
ARMS = ("sqlite", "http+sqlite", "pg+s3", "pool")


def _params(tmp: Path, model: str) -> Path:
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["train"]["epochs"] = 12
    params["registry"]["model_name"] = model
    path = tmp / f"params-{model}.yaml"
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path


def _workspace(tmp: Path, model: str, **init: str) -> Workspace:
    from pipelines.base import train_base
    from pipelines.intake import submit
    from pipelines.workspace import init_workspace

    ws = init_workspace(tmp / model, _params(tmp, model), **init)
    train_base(ws)
    submit(ws, {"kind": "class", "class_label": 3})
    return ws


def _approve(ws: Workspace, version: str) -> float:
    from pipelines.review import approve

    t0 = time.perf_counter()
    approve(ws, ws.registry(), ws.settings.registry.model_name, version, "bench-reviewer")
    return time.perf_counter() - t0


def _direct(ws: Workspace) -> tuple[float, str]:
    from pipelines.flow import deletion_batch

    t0 = time.perf_counter()
    out = deletion_batch(str(ws.root))
    assert out.status == "awaiting_approval", out.reason
    return time.perf_counter() - t0, out.model_version


def _pooled(ws: Workspace, pool: str) -> tuple[float, str]:
    from prefect.client.orchestration import get_client
    from prefect.deployments import run_deployment

    from pipelines.deploy import deploy_batches, deployment_name
    from pipelines.store import RequestStore

    deploy_batches(ws, pool)
    t0 = time.perf_counter()
    run = run_deployment(f"deletion-batch/{deployment_name(ws)}", timeout=0)
    with get_client(sync_client=True) as client:
        while not client.read_flow_run(run.id).state.is_final():
            time.sleep(0.2)
        state = client.read_flow_run(run.id).state
    seconds = time.perf_counter() - t0
    assert state.is_completed(), state.message
    with RequestStore(ws.requests_db) as store:
        (req,) = store.list()
    return seconds, req.model_version


def _env(values: dict[str, str]) -> ExitStack:
    """Set environment variables for one arm, restored after it."""
    stack = ExitStack()
    old = {k: os.environ.get(k) for k in values}
    os.environ.update(values)

    def restore() -> None:
        for k, v in old.items():
            os.environ.pop(k, None) if v is None else os.environ.__setitem__(k, v)

    stack.callback(restore)
    return stack


def main(
    repeats: int = typer.Option(2, help="Batches per arm (alternated across arms)."),
    out: Path = typer.Option(Path("benchmarks/results/stack-timing"), help="Output folder."),
) -> None:
    quiet_environment()
    tmp = Path(tempfile.mkdtemp(prefix="unlearn-stack-"))
    os.environ.setdefault("UNLEARN_KEY_DIR", str(tmp / "keys"))
    os.environ["PREFECT_HOME"] = str(tmp / "prefect-home")
    from prefect.testing.utilities import prefect_test_harness

    from benchmarks.services import AWS, create_database, moto_s3, postgres_cluster, serve_mlflow
    from benchmarks.services import stop as stop_proc
    from pipelines.keys import init_keys

    init_keys()
    rows: list[dict] = []
    with ExitStack() as up:
        up.enter_context(prefect_test_harness(server_startup_timeout=120))
        pg = up.enter_context(postgres_cluster(("mlflow",)))
        s3_url, _ = up.enter_context(moto_s3())
        s3_env = {**AWS, "MLFLOW_S3_ENDPOINT_URL": s3_url, "AWS_ENDPOINT_URL": s3_url}
        (tmp / "srv-sqlite").mkdir()
        http_sqlite, p1 = serve_mlflow(tmp / "srv-sqlite")
        (tmp / "srv-pg").mkdir()
        pg_args = [
            "--backend-store-uri",
            f"{pg}/mlflow",
            "--artifacts-destination",
            "s3://mlflow/b",
        ]
        http_pg, p2 = serve_mlflow(tmp / "srv-pg", *pg_args, env=s3_env)
        up.callback(stop_proc, p1)
        up.callback(stop_proc, p2)
        worker = _start_worker(tmp)
        up.callback(stop_proc, worker)
        # One untimed batch first: the first flow run in a process pays imports and Prefect's
        # client start-up, which would otherwise land on whichever arm runs first.
        with _env({}):
            ws = _workspace(tmp, "bench-warmup")
            _approve(ws, _direct(ws)[1])
        for r in range(repeats):
            for arm in ARMS:
                model = f"bench-{arm.replace('+', '-')}-{r}"
                env, init = {}, {}
                if arm == "http+sqlite":
                    env = {"MLFLOW_TRACKING_URI": http_sqlite}
                elif arm == "pg+s3":
                    env = {**s3_env, "MLFLOW_TRACKING_URI": http_pg}
                    init = {"request_store": create_database(pg, f"requests_{r}"),
                            "remote": f"s3://mlflow/dvc-{r}"}  # fmt: skip
                with _env(env):
                    ws = _workspace(tmp, model, **init)
                    batch, version = _pooled(ws, "bench") if arm == "pool" else _direct(ws)
                    approval = _approve(ws, version)
                rows.append({"arm": arm, "repeat": r, "batch_s": round(batch, 2),
                             "approve_s": round(approval, 2)})  # fmt: skip
                print(json.dumps(rows[-1]), flush=True)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(rows, indent=1))
    (out / "table.md").write_text(_table(rows))
    print(_table(rows))


def _start_worker(tmp: Path) -> subprocess.Popen:
    """A process pool `bench` and one worker on it (started before any timing)."""
    from prefect.settings import get_current_settings

    from benchmarks.services import BIN
    from pipelines.deploy import create_pool

    create_pool("bench", "process")
    env = {**os.environ, "PREFECT_HOME": str(tmp / "worker-home"),
           "PREFECT_API_URL": str(get_current_settings().api.url),  # the harness's server
           "PREFECT_WORKER_QUERY_SECONDS": "1"}  # fmt: skip
    log = (tmp / "worker.log").open("w")
    return subprocess.Popen(
        [str(BIN / "prefect"), "worker", "start", "--pool", "bench", "--limit", "1"],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip


def _table(rows: list[dict]) -> str:
    med = {
        arm: {k: statistics.median(r[k] for r in rows if r["arm"] == arm)
              for k in ("batch_s", "approve_s")}
        for arm in ARMS
    }  # fmt: skip
    base = med["sqlite"]
    lines = ["| arm | batch s (median) | x sqlite | approval s (median) | x sqlite |",
             "|---|---|---|---|---|"]  # fmt: skip
    for arm, m in med.items():
        b, a = m["batch_s"], m["approve_s"]
        lines.append(f"| {arm} | {b:.1f} | {b / base['batch_s']:.2f} | {a:.1f} | "
                     f"{a / base['approve_s']:.2f} |")  # fmt: skip
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    typer.run(main)
