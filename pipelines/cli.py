"""`unlearn`: the command line (typer + rich). Every command finds its workspace from the current
directory or --workspace. Known failures print one line (`error: ...`) and exit 2."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click
import typer

from benchmarks import cli as bench_cli
from pipelines.cli_common import CliError, current_workspace, err, error_line, options, out
from pipelines.cli_data import data_app, model_app
from pipelines.cli_requests import request_app
from pipelines.cli_review import audit_app, keys_app, review_app
from pipelines.env import quiet_environment

if TYPE_CHECKING:
    from pipelines.flow import BatchOutcome

app = typer.Typer(
    rich_markup_mode="markdown",
    add_completion=False,
    pretty_exceptions_enable=False,
    no_args_is_help=True,
    help="Certified machine unlearning: requests -> RFA-LoRA unlearning -> gates -> registry -> "
    "review -> audit.",
)
batch_app = typer.Typer(no_args_is_help=True, help="Run a deletion batch (Prefect flow).")
app.add_typer(model_app, name="model")
app.add_typer(data_app, name="data")
app.add_typer(request_app, name="request")
app.add_typer(batch_app, name="batch")
app.add_typer(review_app, name="review")
app.add_typer(audit_app, name="audit")
app.add_typer(keys_app, name="keys")


@app.callback()
def _root(
    workspace: Path | None = typer.Option(
        None,
        "--workspace",
        "-w",
        help="Workspace directory (default: found from the current directory).",
    ),
) -> None:
    options["workspace"] = workspace


@app.command()
def init(
    directory: Path = typer.Argument(..., help="New workspace directory."),
    params: Path | None = typer.Option(None, help="params.yaml to use (default: the project's)."),
    remote: str | None = typer.Option(
        None,
        help="DVC remote: a folder, or a URL (s3://, gs://, azure://, ssh://; their dvc extra "
        "installed). Default: a folder inside .unlearn/.",
    ),
    request_store: str | None = typer.Option(
        None,
        help="Request store shared by this model's workers and clones: a postgresql:// URL "
        "(password from PGPASSWORD or ~/.pgpass). Default: an sqlite file inside .unlearn/.",
    ),
    git_remote: str | None = typer.Option(
        None, help="git remote the workspace's history (the audit trail) is pushed to."
    ),
) -> None:
    """Create a workspace: git + DVC repo with a local remote, raw data snapshot, request store."""
    from pipelines.workspace import init_workspace

    ws = init_workspace(directory, params, remote, request_store, git_remote)
    out.print(
        f"workspace ready at {ws.root} (data snapshot {ws.git('rev-parse', '--short', 'HEAD')}); "
        "next: cd there and run `dvc repro` or `unlearn train`"
    )


@app.command()
def train(
    replace_champion: bool = typer.Option(
        False, help="Register a new base model even if a champion exists."
    ),
) -> None:
    """Train the base model on the snapshot; register it as champion (stage train_base)."""
    from pipelines.base import train_base
    from pipelines.progress import progress_bars, step_reporter

    ws = current_workspace()
    with progress_bars(err):
        ref, metrics = train_base(ws, replace_champion, step_reporter("train"))
    out.print(
        f"registered {ref} as champion: train {metrics['acc_train']:.2f}%  test "
        f"{metrics['acc_test']:.2f}%"
    )


def _print_outcome(o: BatchOutcome) -> None:
    from pipelines.report import gate_table

    if o.status == "nothing_pending":
        out.print("no pending requests")
        return
    if o.status == "set_aside":
        out.print(f"{o.batch_id}: every request was set aside: {o.reason}", soft_wrap=True)
        return
    out.print(gate_table(o))
    if o.status == "awaiting_approval":
        out.print(
            f"{o.batch_id}: candidate version {o.model_version}, certificate "
            f"{o.certificate_sha256[:16]}...; "
            f"review with `unlearn review approve MODEL {o.model_version} --reviewer NAME`"
        )
    else:
        out.print(f"{o.batch_id}: {o.reason}; requests are pending again")
    for rid in o.escalated:
        out.print(f"{rid}: escalated after repeated failed batches; see `unlearn request list`")


@batch_app.command("run")
def batch_run(
    as_json: bool = typer.Option(
        False, "--json", help="Print the outcome (metrics, gates, timings) as JSON."
    ),
) -> None:
    """Run one deletion batch: the pending requests of the scenario of the one due first."""
    import dataclasses

    from pipelines.batch import preflight
    from pipelines.store import RequestStore

    ws = current_workspace()
    with RequestStore(ws.requests_db) as store:
        pending = preflight(ws.settings.registry.model_name, store, ws.registry())
    if not pending:
        typer.echo(json.dumps({"status": "nothing_pending"}) if as_json else "no pending requests")
        return
    from pipelines.flow import deletion_batch  # imports Prefect: only when there is work
    from pipelines.progress import progress_bars

    with progress_bars(err):
        outcome = deletion_batch(str(ws.root))
    if as_json:
        typer.echo(json.dumps(dataclasses.asdict(outcome), indent=1, default=str))
    else:
        _print_outcome(outcome)
    if outcome.status == "gates_failed":
        raise typer.Exit(1)


@app.command()
def serve(
    every_seconds: float | None = typer.Option(
        None, help="Run every this many seconds (default: params.yaml's schedule section)."
    ),
) -> None:
    """Serve the deletion-batch flow as a Prefect deployment on a schedule, against the Prefect
    server at PREFECT_API_URL; runs until stopped. One batch per model at a time (a Prefect
    concurrency limit, and the batch lease)."""
    from datetime import timedelta

    ws = current_workspace()
    _need_prefect_server()
    from prefect.deployments.runner import EntrypointType

    from pipelines.flow import deletion_batch

    sched = ws.settings.schedule
    when: dict = {"interval": timedelta(minutes=sched.every_minutes)}
    if every_seconds is not None:
        when = {"interval": timedelta(seconds=every_seconds)}
    elif sched.cron:
        when = {"cron": sched.cron}
    name = ws.settings.registry.model_name
    out.print(f"serving deletion batches of {name} ({when}); Ctrl-C stops")
    deletion_batch.serve(
        name=f"deletion-batch-{name}",
        parameters={"workspace": str(ws.root), "model": name, "scheduled": True},
        global_limit=1,
        entrypoint_type=EntrypointType.MODULE_PATH,
        print_starting_message=False,
        **when,
    )


def _need_prefect_server() -> None:
    import os

    if not os.environ.get("PREFECT_API_URL"):
        raise CliError(
            "set PREFECT_API_URL to a running Prefect server (e.g. `prefect server start`, "
            "then PREFECT_API_URL=http://127.0.0.1:4200/api)"
        )


@app.command()
def deploy(
    pool: str = typer.Option(..., help="Prefect work pool (`prefect work-pool create NAME`)."),
    every_seconds: float | None = typer.Option(None, help="Also run on this interval."),
    image: str | None = typer.Option(None, help="Docker / Kubernetes pools: the image to run."),
    path_on_workers: str | None = typer.Option(None, help="The workspace's path on workers."),
) -> None:
    """Deploy this model's deletion batches to a Prefect work pool (PREFECT_API_URL); start
    workers with `prefect worker start --pool NAME`, runs with `prefect deployment run`."""
    from datetime import timedelta

    from pipelines.deploy import deploy_batches, deployment_name

    ws = current_workspace()
    _need_prefect_server()
    every = timedelta(seconds=every_seconds) if every_seconds else None
    try:
        dep = deploy_batches(ws, pool, every, image, path_on_workers)
    except ValueError as err:  # Prefect's words for a missing pool or a pool/image mismatch
        raise CliError(str(err).split(". ")[0]) from None
    out.print(f"deployed deletion-batch/{deployment_name(ws)} ({dep}) to work pool {pool}")


@batch_app.command("recover")
def batch_recover(
    as_json: bool = typer.Option(False, "--json", help="Print what was recovered as JSON."),
) -> None:
    """Finish or undo a batch whose process died (kill -9, out of memory) or whose lease ran out.
    `batch run` does this first by itself; this command does it without starting a batch."""
    import dataclasses

    from pipelines.batch import new_batch_id
    from pipelines.lease import LeaseHeld
    from pipelines.recover import recover_now

    try:
        done = recover_now(current_workspace(), f"recover-{new_batch_id()}")
    except LeaseHeld as e:
        raise CliError(f"{e}; nothing recovered") from None
    if as_json:
        typer.echo(json.dumps([dataclasses.asdict(r) for r in done], indent=1))
        return
    for r in done:
        out.print(r.text(), soft_wrap=True)
    if not done:
        out.print("nothing to recover: no batch stopped part-way")


@app.command()
def demo(
    workspace: Path | None = typer.Option(
        None, help="Workspace directory (default: a new temporary one)."
    ),
    summary: Path | None = typer.Option(None, help="Write the summary JSON here."),
    forget_class: int = typer.Option(0, help="Class forgotten by the first batch."),
    sample_fraction: float = typer.Option(
        0.05, help="Share of the remaining samples forgotten by the second batch."
    ),
) -> None:
    """End to end on the embedded digits: base model, class and sample batches, approvals, audit."""
    from pipelines.demo import run_demo

    result = run_demo(
        workspace or options["workspace"], summary, forget_class, sample_fraction, out
    )
    if not result["ok"]:
        raise typer.Exit(1)


# The benchmark harness's commands (benchmarks/cli.py): unlearn bench | bench-time | bench-report
# | bench-merge | bench-summary.
app.command()(bench_cli.bench)
app.command("bench-time")(bench_cli.bench_time)
app.command("bench-report")(bench_cli.bench_report)
app.command("bench-merge")(bench_cli.bench_merge)
app.command("bench-summary")(bench_cli.bench_summary)


def _user_errors() -> tuple[type[BaseException], ...]:
    from components.certificate import CertificateError
    from components.data import DataError
    from components.forget import ForgetSetError
    from components.models import ModelError
    from components.requests import RequestError
    from components.runtime import PrecisionError
    from components.settings import SettingsError
    from pipelines.batch import BatchError
    from pipelines.registry import RegistryError
    from pipelines.review import ReviewError
    from pipelines.store_faults import StoreError
    from pipelines.workspace import WorkspaceError

    return (
        CliError,
        bench_cli.BenchError,
        CertificateError,
        DataError,
        ForgetSetError,
        ModelError,
        RequestError,
        PrecisionError,
        SettingsError,
        BatchError,
        RegistryError,
        ReviewError,
        StoreError,
        WorkspaceError,
    )


def main(argv: list[str] | None = None) -> int:
    """Run the CLI; known errors become one line on stderr and exit code 2."""
    quiet_environment()
    try:
        rv = app(args=argv, prog_name="unlearn", standalone_mode=False)
        return rv if isinstance(rv, int) else 0
    # typer >= 0.2x carries its own copy of click, whose exceptions are not click's: catch both, or
    # a usage error (unknown option, bad value) escapes as a traceback with exit code 1.
    except (click.exceptions.Exit, typer.Exit) as e:
        return e.exit_code
    except (click.ClickException, typer.TyperException) as e:
        ctx = getattr(e, "ctx", None)  # usage errors know their command: point at its --help
        hint = f" (see '{ctx.command_path} --help')" if ctx is not None else ""
        error_line(f"{e.format_message()}{hint}")
        return getattr(e, "exit_code", 2)
    except (click.exceptions.Abort, typer.Abort):
        err.print("aborted")
        return 1
    except _user_errors() as e:
        error_line(str(e))
        return 2
    except Exception as e:
        from pipelines.faults import explain

        line = explain(e)  # a full disk or read-only file deep inside git, DVC or MLflow
        if line is None:
            raise
        error_line(line)
        return 2


def entrypoint() -> None:
    sys.exit(main())


if __name__ == "__main__":
    entrypoint()
