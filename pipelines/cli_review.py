"""`unlearn review approve | reject`, `unlearn audit trace | verify | verify-offline` and
`unlearn keys init | rotate`: the reviewer's and the auditor's commands."""

from __future__ import annotations

import json
from pathlib import Path

import typer
from rich.text import Text

from pipelines.cli_common import CliError, current_workspace, error_line, out

review_app = typer.Typer(no_args_is_help=True, help="Approve or reject a candidate model version.")
audit_app = typer.Typer(no_args_is_help=True, help="Trace lineage and verify certificates.")
keys_app = typer.Typer(no_args_is_help=True, help="Signing keys: batch certificates, decisions.")


def _mark(ok: bool) -> tuple[str, str]:
    """A check's verdict as (text, style) for Text.assemble."""
    return ("ok  ", "green") if ok else ("FAIL", "red")


@keys_app.command("init")
def keys_init() -> None:
    """Create the batch and review signing keys and the subject-id secret this machine lacks
    (in UNLEARN_KEY_DIR)."""
    from pipelines.keys import init_keys, key_dir

    for role, (kid, created) in init_keys().items():
        where = key_dir() / (role if role != "subject" else "subject.key")
        out.print(f"{role}: key {kid} ({'created' if created else 'exists'}) in {where}")


@keys_app.command("rotate")
def keys_rotate(
    role: str = typer.Option(..., help="batch | review"),
) -> None:
    """A new current key for the role; earlier signatures keep verifying (their public keys stay
    published in each workspace's audit/keys)."""
    from pipelines.keys import key_dir, rotate

    out.print(f"{role}: new key {rotate(role)} in {key_dir() / role}")


@review_app.command("list")
def review_list(
    model: str,
    as_json: bool = typer.Option(False, "--json", help="One JSON object per version."),
) -> None:
    """The versions of MODEL that await a decision: batch, requests, gates, certificate."""
    from rich.table import Table

    ws = current_workspace(read_only=True)
    rows = [
        {"version": str(v.version), "batch_id": v.tags.get("batch_id", ""),
         "scenario": v.tags.get("scenario", ""), "requests": v.tags.get("requests", ""),
         "gates_passed": v.tags.get("gates_passed") == "true",
         "certificate_sha256": v.tags.get("certificate_sha256", "")}
        for v in ws.registry().versions(model)
        if v.tags.get("status") == "awaiting_approval"
    ]  # fmt: skip
    if as_json:
        for r in rows:
            typer.echo(json.dumps(r))
        return
    t = Table(title=f"{len(rows)} awaiting a decision")
    for col in ("version", "batch", "scenario", "requests", "gates", "certificate"):
        t.add_column(col)
    for r in rows:
        gates = "passed" if r["gates_passed"] else "FAILED"
        t.add_row(r["version"], r["batch_id"], r["scenario"], r["requests"], gates,
                  r["certificate_sha256"][:16])  # fmt: skip
    out.print(t)


@review_app.command("show")
def review_show(model: str, version: str) -> None:
    """One version as a reviewer reads it: requests, data, gates, policy, certificate."""
    from pipelines.audit import trace
    from pipelines.report import print_trace

    ws = current_workspace(read_only=True)
    print_trace(out, model, trace(ws, ws.registry(), model, version)[:1])


@review_app.command("approve")
def review_approve(
    model: str,
    version: str,
    reviewer: str | None = typer.Option(
        None, help="Who approves (default: MLflow's authenticated user, UNLEARN_USER, the login)."
    ),
    certificate: str | None = typer.Option(
        None, help="The certificate sha256 you reviewed (must match)."
    ),
    as_json: bool = typer.Option(False, "--json", help="The decision as JSON."),
) -> None:
    """Approve a candidate: moves `champion` only if its certificate verifies."""
    from pipelines.review import approve

    ws = current_workspace()
    d = approve(ws, ws.registry(), model, version, reviewer, certificate)
    if as_json:
        doc = {"model": model, "version": version, "decision": "approved", "reasons": d.reasons}
        typer.echo(json.dumps(doc))
        return
    out.print(f"approved {model}/{version}: {d.text}; alias champion moved")


@review_app.command("start")
def review_start(
    model: str,
    version: str,
    timeout_hours: float = typer.Option(72.0, help="Fail the review if nobody answers by then."),
) -> None:
    """Open the review in Prefect: the flow `review-candidate` pauses with a form (decision,
    reviewer, the certificate hash echoed back) in the Prefect UI, and waits for the answer."""
    import os

    from pipelines.review_flow import review_candidate

    if not os.environ.get("PREFECT_API_URL"):
        raise CliError(
            "set PREFECT_API_URL to the Prefect server whose UI reviewers use (a form must "
            "outlive this command's own temporary server)"
        )
    ws = current_workspace()
    d = review_candidate(str(ws.root), model, version, timeout_hours=timeout_hours)
    out.print(f"{d['decision']} {model}/{version} by {d['reviewer']}: {'; '.join(d['reasons'])}")


@review_app.command("reject")
def review_reject(
    model: str,
    version: str,
    reviewer: str | None = typer.Option(None, help="Who rejects (default as for approve)."),
    reason: str = typer.Option(...),
    as_json: bool = typer.Option(False, "--json", help="The decision as JSON."),
) -> None:
    """Reject a candidate: its requests return to pending with the reason."""
    from pipelines.review import reject

    ws = current_workspace()
    reject(ws, ws.registry(), model, version, reviewer, reason)
    if as_json:
        doc = {"model": model, "version": version, "decision": "rejected", "reason": reason}
        typer.echo(json.dumps(doc))
        return
    out.print(f"rejected {model}/{version}; its requests are pending again")


@audit_app.command("trace")
def audit_trace(
    ref: str = typer.Argument(..., help="MODEL@ALIAS or MODEL/VERSION"),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Print the lineage: requests, manifest, snapshots, base version, code, gates, reviewer."""
    from pipelines.audit import trace
    from pipelines.registry import parse_ref
    from pipelines.report import print_trace

    ws = current_workspace(read_only=True)
    name, version, alias = parse_ref(ref)
    chain = trace(ws, ws.registry(), name, version, alias)
    if as_json:
        typer.echo(json.dumps(chain, default=str, indent=1))
    else:
        print_trace(out, name, chain)


@audit_app.command("verify")
def audit_verify(
    model: str,
    version: str,
    as_json: bool = typer.Option(
        False, "--json", help="Every check as JSON (exit code as without)."
    ),
) -> None:
    """Recompute every hash from DVC and MLflow; exit 1 on any mismatch."""
    from pipelines.audit import verify

    ws = current_workspace(read_only=True)
    report = verify(ws, ws.registry(), model, version)
    if as_json:
        checks = [{"check": n, "ok": ok, "detail": d} for n, ok, d in report.checks]
        doc = {"model": model, "version": version, "ok": report.ok, "checks": checks}
        typer.echo(json.dumps(doc, indent=1))
        if not report.ok:
            raise typer.Exit(1)
        return
    for name, ok, detail in report.checks:
        out.print(Text.assemble(_mark(ok), f" {name}: {detail}"))
    if not report.ok:
        error_line(f"{model}/{version} does not verify: {'; '.join(report.problems)}")
        raise typer.Exit(1)
    out.print(f"{model}/{version} verifies ({len(report.checks)} checks)")


@audit_app.command("verify-offline")
def audit_verify_offline(
    certificate: Path = typer.Argument(..., help="certificate.json (or an approval.json)."),
    public_key: Path = typer.Option(..., help="The signer's public key (PEM), got out of band."),
    signature: Path | None = typer.Option(None, help="Its signature (default: beside it, .sig)."),
) -> None:
    """Check a certificate's Ed25519 signature with nothing but the public key: no workspace,
    no registry, no secret. Exit 1 when it does not verify."""
    from components.signing import key_id, verify_ed25519

    sig_path = signature or certificate.with_suffix(".sig")
    try:
        raw, sig, pub = certificate.read_bytes(), sig_path.read_text(), public_key.read_bytes()
        kid = key_id(pub)
    except (OSError, UnicodeDecodeError, ValueError) as e:
        raise CliError(f"cannot read the certificate, signature or public key: {e}") from None
    if not verify_ed25519(raw, sig, pub):
        error_line(f"{certificate} is not signed by key {kid} ({public_key})")
        raise typer.Exit(1)
    out.print(f"{certificate}: Ed25519 signature valid, key {kid}")


@audit_app.command("aliases")
def audit_aliases(
    model: str,
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Replay the alias history and compare it with MLflow's aliases now: an alias moved by hand,
    or on a version that does not verify, is named (exit 1)."""
    import dataclasses

    from pipelines.aliases import check_aliases

    ws = current_workspace(read_only=True)
    findings = check_aliases(ws, ws.registry(), model)
    if as_json:
        typer.echo(json.dumps([dataclasses.asdict(f) for f in findings], indent=1))
    for f in findings if not as_json else []:
        line = Text.assemble(_mark(f.ok), f" {f.alias} -> {model}/{f.live}: {f.detail}")
        out.print(line, soft_wrap=True)
    if not all(f.ok for f in findings):
        raise typer.Exit(1)


@audit_app.command("subject")
def audit_subject(
    subject: str | None = typer.Argument(None, help="The subject id (keyed before any lookup)."),
    sample: str | None = typer.Option(None, help="A sample id instead of a subject."),
    model: str | None = typer.Option(None, help="Model name (default: the workspace's)."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Every version of the model whose training data held the subject's (or sample's) data,
    the certified version that erased them, and where every alias points now."""
    from rich.table import Table

    from pipelines.lineage import exposures, subject_samples

    if (subject is None) == (sample is None):
        raise CliError("give a subject id or --sample ID")
    ws = current_workspace(read_only=True)
    name = model or ws.settings.registry.model_name
    digest, samples = subject_samples(ws, subject) if subject else ("", {sample})
    if not samples:
        raise CliError("no request and no mapping entry (now or in its history) names it")
    rows = exposures(ws, ws.registry(), name, samples)
    if as_json:
        doc = {"model": name, "subject_sha256": digest, "samples": len(samples),
               "versions": [r.to_dict() for r in rows]}  # fmt: skip
        typer.echo(json.dumps(doc, indent=1))
        return
    t = Table(
        title=f"{name}: {len(samples)} samples" + (f" of subject {digest[:12]}" if digest else "")
    )
    for col in ("version", "kind", "status", "held", "erased by", "aliases"):
        t.add_column(col)
    for r in rows:
        held = "unreadable" if r.held < 0 else f"{r.held}/{len(samples)}"
        t.add_row(
            r.version,
            r.kind,
            r.status,
            held,
            r.erased_by or ("-" if not r.held else Text("not yet", style="red")),
            ",".join(r.aliases),
        )
    out.print(t)
