"""Approval where reviewers work: a Prefect flow that pauses on a candidate with a typed form
(Prefect's `pause_flow_run(wait_for_input=...)`), then carries the decision out through the same
review.approve / review.reject as the CLI (allow-list, separation of duties, signed record).

The form shows the certificate hash and asks for it back: the decision is bound to the candidate
the reviewer read, and refused if the registered certificate is not that one any more."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from prefect import flow, get_run_logger
from prefect.flow_runs import pause_flow_run
from prefect.input import RunInput
from pydantic import Field

from pipelines.review import ReviewError, approve, reject
from pipelines.workspace import Workspace


class ReviewForm(RunInput):
    """The reviewer's answer, typed: Prefect's UI renders it as a form."""

    decision: Literal["approve", "reject"]
    reviewer: str = Field(min_length=1, max_length=120, description="Your name")
    certificate_sha256: str = Field(
        pattern=r"^[0-9a-f]{64}$", description="The certificate hash shown above, copied back"
    )
    reason: str = Field("", max_length=500, description="Why (required to reject)")


def form_description(model: str, version: str, cert: str, report: str) -> str:
    return (
        f"# Review {model}/{version}\n\nCertificate sha256: `{cert}`\n\n"
        "Copy this hash into the form: the decision applies to this certificate only.\n\n"
        f"{report}"
    )


@flow(name="review-candidate", log_prints=True)
def review_candidate(
    workspace: str,
    model: str,
    version: str,
    timeout_hours: float = 72.0,
    poll_seconds: int = 10,
) -> dict:
    """Pause for the reviewer's form, then approve or reject. A refusal (a changed candidate, an
    approver not allowed, self-approval) fails the run with the one-line reason."""
    ws = Workspace(Path(workspace))
    reg = ws.registry()
    mv = reg.resolve(model, version)
    cert = mv.tags.get("certificate_sha256", "")
    if mv.tags.get("status") != "awaiting_approval" or not cert:
        raise ReviewError(f"{model}/{version} does not await approval")
    initial = ReviewForm.with_initial_data(
        description=form_description(model, version, cert, mv.description or ""),
        decision="approve",
    )
    form = pause_flow_run(
        wait_for_input=initial, timeout=int(timeout_hours * 3600), poll_interval=poll_seconds
    )
    log = get_run_logger()
    log.info(
        "%s decided %s for certificate %s", form.reviewer, form.decision, form.certificate_sha256
    )
    if form.decision == "approve":
        d = approve(ws, reg, model, version, form.reviewer, form.certificate_sha256)
    else:
        d = reject(ws, reg, model, version, form.reviewer, form.reason, form.certificate_sha256)
    return {"decision": form.decision, "reviewer": form.reviewer, "reasons": d.reasons}
