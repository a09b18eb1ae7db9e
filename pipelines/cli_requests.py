"""`unlearn request submit | list | cancel | defer | retry | extend`: deletion requests in, and
what became of them."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import typer
from rich.table import Table

from pipelines.cli_common import CliError, current_workspace, out

if TYPE_CHECKING:
    from pipelines.store import RequestStore

request_app = typer.Typer(no_args_is_help=True, help="Submit and list deletion requests.")


@request_app.command("submit")
def request_submit(
    samples: str | None = typer.Option(None, help="Comma-separated sample ids."),
    class_label: int | None = typer.Option(None, "--class", help="Forget this whole class."),
    subject: str | None = typer.Option(None, help="Forget every sample of this subject."),
    mapping: Path | None = typer.Option(
        None, help="Subject -> sample ids JSON (default: the snapshot's data/subjects.json)."
    ),
    file: Path | None = typer.Option(
        None, help="Many requests: .jsonl (one object per line) or .csv (id, kind, target)."
    ),
) -> None:
    """Validate, deduplicate and store deletion requests as pending."""
    from components.requests import RequestError
    from pipelines.intake import submit, submit_file

    if file is not None:
        if samples is not None or class_label is not None or subject is not None:
            raise RequestError("give --file alone, or one of --samples, --class or --subject")
        created, known, n = submit_file(current_workspace(), file, mapping)
        out.print(f"stored {created} requests ({known} already known), {n} samples in all")
        return
    kinds = [
        k
        for k, v in (("samples", samples), ("class", class_label), ("subject", subject))
        if v is not None
    ]
    if len(kinds) != 1:
        raise RequestError("give exactly one of --samples, --class or --subject")
    raw = {"kind": kinds[0]}
    if samples is not None:
        raw["sample_ids"] = list(samples.split(","))
    if class_label is not None:
        raw["class_label"] = class_label
    if subject is not None:
        raw["subject_id"] = subject
    stored, created, n = submit(current_workspace(), raw, mapping)
    word = "stored" if created else "already known as"
    out.print(
        f"{word} {stored.id} ({stored.kind}, {n} samples, status {stored.status}, deadline "
        f"{stored.deadline[:10]})"
    )


@request_app.command("list")
def request_list(
    status: str | None = typer.Option(None, help="Only this status."),
    overdue: bool = typer.Option(
        False, "--overdue", help="Only open requests past their due date."
    ),
    due_within: str | None = typer.Option(
        None, help="Only open requests due within this long, e.g. 7d or 12h (overdue included)."
    ),
    as_json: bool = typer.Option(False, "--json", help="One JSON object per line."),
) -> None:
    """Show requests with their status, due date and reason, the one due first on top."""
    from pipelines.store import RequestStore
    from pipelines.store_views import due_filter, payload_summary, to_json

    try:
        due = due_filter(overdue, due_within)
    except ValueError as e:
        raise CliError(str(e)) from None
    with RequestStore(current_workspace().requests_db) as store:
        rows = store.list(status)
    if due is not None:
        rows = sorted((r for r in rows if r.open and r.deadline < due), key=lambda r: r.deadline)
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


def _change(request_id: str, change: Callable[[RequestStore], None]) -> None:
    """One change to one request; an unknown id or a wrong status is one line."""
    from pipelines.store import RequestStore

    with RequestStore(current_workspace().requests_db) as store:
        try:
            change(store)
        except (ValueError, KeyError) as e:
            raise CliError(str(e.args[0])) from None


def _duration(text: str, option: str) -> str:
    """'7d' -> the ISO time that far from now."""
    from pipelines.store_views import due_filter

    try:
        return due_filter(False, text)
    except ValueError as e:
        raise CliError(str(e).replace("--due-within", option)) from None


@request_app.command("cancel")
def request_cancel(
    request_id: str,
    reason: str = typer.Option(..., help="Why (recorded in the request's history)."),
) -> None:
    """Withdraw a pending or set-aside request; no batch takes it afterwards."""
    _change(request_id, lambda store: store.cancel(request_id, f"cancelled: {reason}"))
    out.print(f"cancelled {request_id}")


@request_app.command("defer")
def request_defer(
    request_id: str,
    for_: str = typer.Option(..., "--for", help="How long, e.g. 7d or 12h."),
    reason: str = typer.Option(..., help="Why (recorded in the request's history)."),
) -> None:
    """Keep a pending request out of batches for a while (its due date stays as it was)."""
    until = _duration(for_, "--for")
    _change(request_id, lambda store: store.defer(request_id, until, f"deferred: {reason}"))
    out.print(f"deferred {request_id} until {until}")


@request_app.command("retry")
def request_retry(
    request_id: str,
    reason: str = typer.Option(..., help="Why another try (recorded in the request's history)."),
) -> None:
    """Put a set-aside (e.g. escalated) request back to pending, for the next batch."""
    _change(request_id, lambda store: store.reopen(request_id, f"retry: {reason}"))
    out.print(f"{request_id} is pending again")


@request_app.command("extend")
def request_extend(
    request_id: str,
    by: str = typer.Option(..., "--by", help="How much later, e.g. 30d."),
    reason: str = typer.Option(..., help="Why (recorded; GDPR Art. 12(3) asks for one)."),
) -> None:
    """Move an open request's deadline later, within requests.max_extension_days."""
    from datetime import UTC, datetime

    from components.scheduling import extended_deadline

    if not reason.strip():
        raise CliError("--reason must say why the deadline moves")
    rq = current_workspace().settings.requests
    delta = datetime.fromisoformat(_duration(by, "--by")) - datetime.now(UTC).replace(microsecond=0)

    def change(store: RequestStore) -> None:
        r = store.get(request_id)
        new = extended_deadline(
            datetime.fromisoformat(r.received_at), datetime.fromisoformat(r.deadline), delta,
            rq.deadline_days, rq.max_extension_days,
        )  # fmt: skip
        store.extend(request_id, new.isoformat(), reason)

    _change(request_id, change)
    out.print(f"extended {request_id}")
