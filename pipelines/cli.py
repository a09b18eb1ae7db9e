"""`unlearn`: the command line (typer + rich). Every command finds its workspace from the current
directory or --workspace. Known failures print one line (`error: ...`) and exit 2."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Optional

import click
import typer
from rich.console import Console
from rich.table import Table

from benchmarks import cli as bench_cli
from pipelines.env import quiet_environment

app = typer.Typer(
    add_completion=False,
    pretty_exceptions_enable=False,
    no_args_is_help=True,
    help="Certified machine unlearning: requests -> RFA-LoRA unlearning -> gates -> registry -> review -> audit.",
)
request_app = typer.Typer(no_args_is_help=True, help="Submit and list deletion requests.")
batch_app = typer.Typer(no_args_is_help=True, help="Run a deletion batch (Prefect flow).")
review_app = typer.Typer(no_args_is_help=True, help="Approve or reject a candidate model version.")
audit_app = typer.Typer(no_args_is_help=True, help="Trace lineage and verify certificates.")
model_app = typer.Typer(no_args_is_help=True, help="Bring an existing model into the workspace.")
data_app = typer.Typer(
    no_args_is_help=True, help="Look at the training snapshot the champion stands on."
)
app.add_typer(model_app, name="model")
app.add_typer(data_app, name="data")
app.add_typer(request_app, name="request")
app.add_typer(batch_app, name="batch")
app.add_typer(review_app, name="review")
app.add_typer(audit_app, name="audit")

out = Console(highlight=False)
err = Console(stderr=True, highlight=False)
_state: dict[str, Optional[Path]] = {"workspace": None}


@app.callback()
def _root(
    workspace: Optional[Path] = typer.Option(
        None,
        "--workspace",
        "-w",
        help="Workspace directory (default: found from the current directory).",
    ),
) -> None:
    _state["workspace"] = workspace


def _ws():
    from pipelines.workspace import find_workspace

    ws = find_workspace(_state["workspace"])
    quiet_environment(ws.prefect_home)
    return ws


def _reg(ws):
    return ws.registry()


@app.command()
def init(
    directory: Path = typer.Argument(..., help="New workspace directory."),
    params: Optional[Path] = typer.Option(
        None, help="params.yaml to use (default: the project's)."
    ),
    remote: Optional[Path] = typer.Option(
        None, help="DVC remote directory (default: inside .unlearn/)."
    ),
) -> None:
    """Create a workspace: git + DVC repo with a local remote, raw data snapshot, request store."""
    from pipelines.workspace import init_workspace

    ws = init_workspace(directory, params, remote)
    out.print(
        f"workspace ready at {ws.root} (data snapshot {ws.git('rev-parse', '--short', 'HEAD')}); next: cd there and run `dvc repro` or `unlearn train`"
    )


@app.command()
def train(
    replace_champion: bool = typer.Option(
        False, help="Register a new base model even if a champion exists."
    ),
) -> None:
    """Train the base model on the committed snapshot and register it as champion (dvc.yaml's train_base stage)."""
    from pipelines.base import train_base

    ref, metrics = train_base(_ws(), replace_champion)
    out.print(
        f"registered {ref} as champion: train {metrics['acc_train']:.2f}%  test {metrics['acc_test']:.2f}%"
    )


@model_app.command("import")
def model_import(
    checkpoint: Optional[Path] = typer.Option(
        None, help="State dict (.pt/.pth/.th, read weights-only) or .safetensors file."
    ),
    uri: Optional[str] = typer.Option(
        None, help="MLflow model URI: models:/NAME@ALIAS, models:/NAME/VERSION or runs:/ID/PATH."
    ),
    tracking_uri: Optional[str] = typer.Option(
        None, help="Tracking server holding --uri (default: the workspace's)."
    ),
    trained_on: str = typer.Option(
        "train-files",
        help="What the model was trained on: train-files (every training "
        "file of the data source) or train-split (only this workspace's train split).",
    ),
    replace_champion: bool = typer.Option(False, help="Register it even if a champion exists."),
) -> None:
    """Register a pre-trained model as champion, without training; architecture from params.yaml's model section."""
    from pipelines.importer import import_model

    ref, facts = import_model(_ws(), checkpoint, uri, tracking_uri, trained_on, replace_champion)
    out.print(
        f"imported {facts.get('source.uri') or facts.get('source.file')} as {ref} (champion): "
        f"test {facts['acc_test']:.2f}%  heldout {facts['acc_heldout']:.2f}%  train sample {facts['acc_train_sample']:.2f}%"
    )


@data_app.command("ids")
def data_ids(
    class_label: Optional[int] = typer.Option(None, "--class", help="Only this class."),
    random: Optional[int] = typer.Option(None, help="A seeded random draw of this many ids."),
    seed: int = typer.Option(0, help="Seed of the --random draw."),
) -> None:
    """Print training sample ids of the current snapshot, comma-separated (for `request submit --samples`)."""
    import numpy as np

    from pipelines.intake import current_state

    train = current_state(_ws()).train
    ids = train.ids if class_label is None else train.ids[train.y == class_label]
    if random is not None:
        if not 0 < random <= len(ids):
            raise CliError(f"--random must be between 1 and {len(ids)}")
        ids = np.sort(np.random.default_rng(seed).choice(ids, size=random, replace=False))
    typer.echo(",".join(ids.tolist()))


@request_app.command("submit")
def request_submit(
    samples: Optional[str] = typer.Option(None, help="Comma-separated sample ids."),
    class_label: Optional[int] = typer.Option(None, "--class", help="Forget this whole class."),
    subject: Optional[str] = typer.Option(None, help="Forget every sample of this subject."),
    mapping: Optional[Path] = typer.Option(
        None, help="Subject -> sample ids JSON (default: the snapshot's data/subjects.json)."
    ),
) -> None:
    """Validate, deduplicate and store a deletion request as pending."""
    from components.requests import RequestError
    from pipelines.intake import submit

    kinds = [
        k
        for k, v in (("samples", samples), ("class", class_label), ("subject", subject))
        if v is not None
    ]
    if len(kinds) != 1:
        raise RequestError("give exactly one of --samples, --class or --subject")
    raw = {"kind": kinds[0]}
    if samples is not None:
        raw["sample_ids"] = [s for s in samples.split(",")]
    if class_label is not None:
        raw["class_label"] = class_label
    if subject is not None:
        raw["subject_id"] = subject
    stored, created, n = submit(_ws(), raw, mapping)
    word = "stored" if created else "already known as"
    out.print(
        f"{word} {stored.id} ({stored.kind}, {n} samples, status {stored.status}, deadline {stored.deadline[:10]})"
    )


@request_app.command("list")
def request_list(
    status: Optional[str] = typer.Option(None, help="Only this status."),
    as_json: bool = typer.Option(False, "--json", help="One JSON object per line."),
) -> None:
    """Show requests with their status and reason."""
    from pipelines.store import RequestStore, payload_summary, to_json

    with RequestStore(_ws().requests_db) as store:
        rows = store.list(status)
    if as_json:
        for r in rows:
            typer.echo(to_json(r))  # plain: rich would wrap long lines and break the JSON
        return
    t = Table(title=f"{len(rows)} requests")
    for col in ("id", "kind", "target", "samples", "status", "deadline", "model"):
        t.add_column(col, no_wrap=col in ("id", "status", "deadline"))
    t.add_column("reason", overflow="fold")
    for r in rows:
        t.add_row(
            r.id,
            r.kind,
            payload_summary(r),
            str(r.n_samples),
            r.status,
            r.deadline[:10],
            r.model_version,
            r.reason[:80],
        )
    out.print(t)


def _print_outcome(o) -> None:
    from pipelines.report import gate_table

    if o.status == "nothing_pending":
        out.print("no pending requests")
        return
    out.print(gate_table(o))
    if o.status == "awaiting_approval":
        out.print(
            f"{o.batch_id}: candidate version {o.model_version}, certificate {o.certificate_sha256[:16]}...; "
            f"review with `unlearn review approve MODEL {o.model_version} --reviewer NAME`"
        )
    else:
        out.print(f"{o.batch_id}: {o.reason}; requests are pending again")


@batch_app.command("run")
def batch_run(
    as_json: bool = typer.Option(
        False, "--json", help="Print the outcome (metrics, gates, timings) as JSON."
    ),
) -> None:
    """Run one deletion batch over the pending requests (class requests first)."""
    import dataclasses

    from pipelines.batch import preflight
    from pipelines.store import RequestStore

    ws = _ws()
    with RequestStore(ws.requests_db) as store:
        pending = preflight(ws, store, _reg(ws))
    if not pending:
        typer.echo(json.dumps({"status": "nothing_pending"}) if as_json else "no pending requests")
        return
    from pipelines.flow import deletion_batch  # imports Prefect: only when there is work

    outcome = deletion_batch(str(ws.root))
    if as_json:
        typer.echo(json.dumps(dataclasses.asdict(outcome), indent=1, default=str))
    else:
        _print_outcome(outcome)
    if outcome.status == "gates_failed":
        raise typer.Exit(1)


@review_app.command("approve")
def review_approve(
    model: str,
    version: str,
    reviewer: str = typer.Option(..., help="Who approves."),
    certificate: Optional[str] = typer.Option(
        None, help="The certificate sha256 you reviewed (must match)."
    ),
) -> None:
    """Approve a candidate: moves `champion` only if its certificate verifies."""
    from pipelines.review import approve

    ws = _ws()
    d = approve(ws, _reg(ws), model, version, reviewer, certificate)
    out.print(f"approved {model}/{version}: {d.text}; alias champion moved")


@review_app.command("reject")
def review_reject(
    model: str, version: str, reviewer: str = typer.Option(...), reason: str = typer.Option(...)
) -> None:
    """Reject a candidate: its requests return to pending with the reason."""
    from pipelines.review import reject

    ws = _ws()
    reject(ws, _reg(ws), model, version, reviewer, reason)
    out.print(f"rejected {model}/{version}; its requests are pending again")


@audit_app.command("trace")
def audit_trace(
    ref: str = typer.Argument(..., help="MODEL@ALIAS or MODEL/VERSION"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Print the lineage chain: requests, manifest, data snapshots, base version, code, gates, reviewer."""
    from pipelines.audit import trace
    from pipelines.registry import parse_ref
    from pipelines.report import print_trace

    ws = _ws()
    name, version, alias = parse_ref(ref)
    chain = trace(ws, _reg(ws), name, version, alias)
    if as_json:
        typer.echo(json.dumps(chain, default=str, indent=1))
    else:
        print_trace(out, name, chain)


@audit_app.command("verify")
def audit_verify(model: str, version: str) -> None:
    """Recompute every hash from DVC and MLflow; exit 1 on any mismatch."""
    from pipelines.audit import verify

    ws = _ws()
    report = verify(ws, _reg(ws), model, version)
    for name, ok, detail in report.checks:
        out.print(f"[{'green' if ok else 'red'}]{'ok  ' if ok else 'FAIL'}[/] {name}: {detail}")
    if not report.ok:
        err.print(f"error: {model}/{version} does not verify: {'; '.join(report.problems)}")
        raise typer.Exit(1)
    out.print(f"{model}/{version} verifies ({len(report.checks)} checks)")


@app.command()
def demo(
    workspace: Optional[Path] = typer.Option(
        None, help="Workspace directory (default: a new temporary one)."
    ),
    summary: Optional[Path] = typer.Option(None, help="Write the summary JSON here."),
    forget_class: int = typer.Option(0, help="Class forgotten by the first batch."),
    sample_fraction: float = typer.Option(
        0.05, help="Share of the remaining samples forgotten by the second batch."
    ),
) -> None:
    """End to end on the embedded digits data: base model, a class batch, a sample batch, approvals, trace, verify."""
    from pipelines.demo import run_demo

    result = run_demo(workspace or _state["workspace"], summary, forget_class, sample_fraction, out)
    if not result["ok"]:
        raise typer.Exit(1)


# The benchmark harness's commands (benchmarks/cli.py): unlearn bench | bench-report | bench-merge.
app.command()(bench_cli.bench)
app.command("bench-report")(bench_cli.bench_report)
app.command("bench-merge")(bench_cli.bench_merge)


class CliError(Exception):
    """A bad argument found by a command itself (reported as one `error:` line, exit 2)."""


def _user_errors() -> tuple[type[BaseException], ...]:
    from components.certificate import CertificateError
    from components.data import DataError
    from components.forget import ForgetSetError
    from components.models import ModelError
    from components.requests import RequestError
    from components.settings import SettingsError
    from pipelines.batch import BatchError
    from pipelines.registry import RegistryError
    from pipelines.review import ReviewError
    from pipelines.workspace import WorkspaceError

    return (
        CliError,
        bench_cli.BenchError,
        CertificateError,
        DataError,
        ForgetSetError,
        ModelError,
        RequestError,
        SettingsError,
        BatchError,
        RegistryError,
        ReviewError,
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
        err.print(f"error: {e.format_message()}{hint}", markup=False, soft_wrap=True)
        return getattr(e, "exit_code", 2)
    except (click.exceptions.Abort, typer.Abort):
        err.print("aborted")
        return 1
    except _user_errors() as e:
        err.print(f"error: {e}", markup=False, soft_wrap=True)
        return 2


def entrypoint() -> None:
    sys.exit(main())


if __name__ == "__main__":
    entrypoint()
