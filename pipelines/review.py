"""Reviewer decisions. The decision itself is pure (components/promotion.py); this module gathers
the facts, carries the decision out in a crash-safe order and records it."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from datetime import timedelta
from typing import TYPE_CHECKING

from components.canonical import canonical_json
from components.promotion import (
    Decision,
    VersionFacts,
    decide_approval,
    decide_rejection,
    separation_of_duties,
)
from pipelines.alias_history import entry, history_state, record_history
from pipelines.audit import verify
from pipelines.gitlock import git_locks
from pipelines.identity import authenticated, whoami
from pipelines.keys import require_signer, sign_as
from pipelines.lease import LeaseHeld
from pipelines.lease_keeper import holding
from pipelines.purge import purge
from pipelines.registry import (
    ALIAS_CANDIDATE,
    ALIAS_CHAMPION,
    Registry,
    RegistryError,
    StoreUnavailable,
    VersionRef,
    data_rev,
)
from pipelines.snapshot import commit_files, restore_snapshot
from pipelines.store import RequestStore
from pipelines.workspace import Workspace, WorkspaceError, utcnow

if TYPE_CHECKING:
    from mlflow.entities.model_registry import ModelVersion


class ReviewError(RuntimeError):
    """The decision refused the approval / rejection; the message lists why."""


def _resolved(reg: Registry, name: str, version: str) -> ModelVersion | None:
    """The version, or None if there is none; a store that cannot be read raises."""
    try:
        return reg.resolve(name, version)
    except StoreUnavailable:
        raise
    except RegistryError:
        return None


def gather_facts(
    ws: Workspace, reg: Registry, name: str, version: str, check_certificate: bool = True
) -> VersionFacts:
    mv = _resolved(reg, name, version)
    if mv is None:
        return VersionFacts(exists=False, has_certificate=False)
    tags = mv.tags
    has_cert = bool(tags.get("certificate_sha256"))
    problems: tuple[str, ...] = ()
    if has_cert and check_certificate:
        problems = tuple(verify(ws, reg, name, version).problems)
    champion = reg.champion(name).version if reg.has_alias(name, ALIAS_CHAMPION) else ""
    return VersionFacts(
        True,
        has_cert,
        problems,
        tags.get("gates_passed") == "true",
        tags.get("status", ""),
        tags.get("certificate_sha256", ""),
        ALIAS_CANDIDATE in (mv.aliases or []),
        tags.get("base_version", ""),
        str(champion),
    )


def _validate_reviewer(reviewer: str | None) -> str:
    """The reviewer as named, or whoami(); one MLflow authenticates must be who they say."""
    reviewer = (reviewer or whoami()).strip()
    if not reviewer or len(reviewer) > 120:
        raise ReviewError("--reviewer must name who decides (1-120 characters)")
    proven = authenticated()
    if proven is not None and reviewer != proven:
        raise ReviewError(f"--reviewer {reviewer}, but the MLflow server authenticates {proven}")
    return reviewer


REFUSALS = "audit/refusals.jsonl"


def _refuse(ws: Workspace, action: str, name: str, version: str, reviewer: str, why: str) -> None:
    """A refused decision is one line to the reviewer and a committed record for the auditor."""
    record = {"at": utcnow(), "action": action, "model": name, "version": version,
             "reviewer": reviewer, "refused": why}  # fmt: skip
    if why == "model version does not exist":  # nothing to attach a record to
        raise ReviewError(f"cannot {action} {name}/{version}: {why}")
    path, note = ws.root / REFUSALS, ""
    try:
        with path.open("a") as f:
            f.write(json.dumps(record, sort_keys=True) + "\n")
        commit_files(ws, [REFUSALS], f"refused to {action} {name}/{version} for {reviewer}")
    except (OSError, WorkspaceError) as err:  # the refusal stands; only its record is missing
        note = f" (the refusal could not be recorded in {REFUSALS}: {err})"
    raise ReviewError(f"cannot {action} {name}/{version}: {why}{note}")


def _check_duties(
    ws: Workspace, name: str, version: str, reviewer: str, tags: dict, approving: bool
) -> None:
    """The allow-list for every decision; separation of duties for approvals."""
    submitters: set[str] = set()
    runner = ""
    if approving:
        with RequestStore(ws.requests_db) as store:
            submitters = {r.submitted_by for r in store.by_batch(tags.get("batch_id", ""))}
        runner = tags.get("batch.ran_by", "")
    reasons = separation_of_duties(reviewer, ws.settings.review.approvers, submitters, runner)
    if reasons:
        _refuse(
            ws, "approve" if approving else "reject", name, version, reviewer, "; ".join(reasons)
        )


def _require_git_unlocked(ws: Workspace) -> None:
    """A decision ends in a git commit: refuse before changing anything while any of git's lock
    files exists (the index's, HEAD's, a branch's). A person is there to decide, so the file is
    named at once rather than waited for or cleared after a while, as a batch's git does."""
    locks = git_locks(ws.root / ".git")
    if locks:
        verb, them = ("exists", "it") if len(locks) == 1 else ("exist", "them")
        raise ReviewError(
            f"{', '.join(map(str, locks))} {verb}: another git command is running in the "
            f"workspace, or one crashed; remove {them} once none runs, then retry (nothing was "
            "decided)"
        )


DECISION_LEASE = timedelta(minutes=10)  # renewed while the decision runs (lease_keeper)


@contextmanager
def _one_decision(ws: Workspace, name: str, action: str, version: str) -> Iterator[None]:
    """Hold the model's lease for the decision, as a batch does for its run: two reviewers
    deciding on one model at once (an approval and a rejection of the same version) would each
    pass the checks and leave a champion tagged rejected. A running batch, or another decision,
    is named in one line and nothing is decided. A dead batch's lease is replaced; the next batch
    run recovers that batch (its requests hold no lease)."""
    holder = f"review-{action}-{version}-{uuid.uuid4().hex[:6]}"
    with ExitStack() as stack:
        try:
            stack.enter_context(holding(ws.requests_db, name, holder, DECISION_LEASE))
        except LeaseHeld as err:
            why = f"{err} (nothing was decided)"
            raise ReviewError(f"cannot {action} {name}/{version} now: {why}") from None
        yield


def _drop_candidate(reg: Registry, name: str, version: str) -> ModelVersion:
    """Drop `candidate` if this version holds it (a later batch's candidate is left alone)."""
    mv = reg.resolve(name, version)
    if ALIAS_CANDIDATE in (mv.aliases or []):
        reg.drop_alias(name, ALIAS_CANDIDATE)
    return mv


def _awaiting(ws: Workspace, batch_id: str) -> bool:
    with RequestStore(ws.requests_db) as store:
        return any(r.status == "awaiting_approval" for r in store.by_batch(batch_id))


def _unfinished(ws: Workspace, name: str, version: str, facts: VersionFacts, batch_id: str) -> bool:
    """An approval recorded (signed, tagged) but stopped before its last step: the champion has
    not moved past the version, and one of alias, history or requests is missing."""
    if facts.status != "approved" or facts.champion_version not in (version, facts.base_version):
        return False
    history = {"alias": ALIAS_CHAMPION, "version": version}
    return (
        facts.champion_version != version
        or facts.is_candidate
        or history_state(ws, name, history) != "committed"
        or _awaiting(ws, batch_id)
    )


def approve(
    ws: Workspace,
    reg: Registry,
    name: str,
    version: str,
    reviewer: str | None,
    certificate_sha256: str | None = None,
) -> Decision:
    """Move `champion` to the version if its certificate verifies; requests become certified.
    All or nothing: an approval that stopped part-way (a crash, a git failure) is completed by
    the next `approve` of the same version instead of being refused as "already approved"."""
    reviewer = _validate_reviewer(reviewer)
    _require_git_unlocked(ws)
    # The registry is read before the lease is taken (a write to the request store), so a store
    # that cannot be read is one line with no file changed; the facts are read again under it.
    _resolved(reg, name, version)
    with _one_decision(ws, name, "approve", version):
        return _approve(ws, reg, name, version, reviewer, certificate_sha256)


def _approve(
    ws: Workspace, reg: Registry, name: str, version: str, reviewer: str, sha: str | None
) -> Decision:
    facts = gather_facts(ws, reg, name, version)
    mv = reg.resolve(name, version) if facts.exists else None
    if mv is not None and _unfinished(ws, name, version, facts, mv.tags.get("batch_id", "")):
        who, at = mv.tags.get("approved_by", reviewer), mv.tags.get("approved_at", "")
        _carry_out_approval(ws, reg, name, version, who, facts.base_version or None)
        return Decision(True, [f"completed the approval by {who} at {at}, which stopped part-way"])
    decision = decide_approval(facts, sha)
    if not decision.promote:
        _refuse(ws, "approve", name, version, reviewer, decision.text)
    _check_duties(ws, name, version, reviewer, mv.tags, approving=True)
    require_signer(ws, "review")
    approval = {
        "schema": "unlearn.approval/1",
        "model": name,
        "version": version,
        "decision": "approved",
        "certificate_sha256": facts.certificate_sha256,
        "reviewer": reviewer,
        "at": utcnow(),
    }
    # Order matters for crash safety: the signed record first, then the status tag (from here
    # on a retry completes the approval), then the alias, history and requests.
    _log_signed(ws, reg, mv.run_id, "approval", approval)
    reg.set_tags(
        VersionRef(name, version),
        {"status": "approved", "approved_by": reviewer, "approved_at": approval["at"]},
        run_id=mv.run_id,
    )
    _carry_out_approval(ws, reg, name, version, reviewer, facts.champion_version or None)
    return decision


def _log_signed(ws: Workspace, reg: Registry, run_id: str, kind: str, record: dict) -> None:
    """A decision as a signed record beside the certificate, signed with the review key."""
    raw = canonical_json(record)
    sig, public = sign_as(ws, "review", raw)
    files = {f"{kind}.json": raw, f"{kind}.sig": sig.encode()}
    if public is not None:
        files[f"{kind}.pub"] = public
    reg.log_to_run(run_id, files)


def _carry_out_approval(
    ws: Workspace, reg: Registry, name: str, version: str, reviewer: str, previous: str | None
) -> None:
    """The steps after the status tag, each a no-op when already done."""
    mv = _drop_candidate(reg, name, version)
    reg.set_alias(VersionRef(name, version), ALIAS_CHAMPION)
    why = f"approved certificate {mv.tags.get('certificate_sha256', '')}"
    record_history(ws, entry(name, ALIAS_CHAMPION, version, previous, reviewer, why))
    with RequestStore(ws.requests_db) as store:
        store.transition(
            mv.tags.get("batch_id", ""),
            "certified",
            model_version=version,
            from_status=("awaiting_approval",),
            reason=f"certified in {name}/{version}, approved by {reviewer}",
        )
    if ws.settings.requests.purge_on_approval:
        try:
            purge(ws, reg, name, version, reviewer)
        except (OSError, WorkspaceError) as err:  # the approval stands; the purge can be re-run
            raise ReviewError(
                f"approved {name}/{version}, but purging its erased samples failed ({err}); "
                f"run `unlearn data purge {name} {version}`"
            ) from None


def reject(
    ws: Workspace,
    reg: Registry,
    name: str,
    version: str,
    reviewer: str | None,
    reason: str,
    certificate_sha256: str | None = None,
) -> Decision:
    """Mark the version rejected, drop `candidate`; its requests go back to pending, with why.
    All or nothing, as approve: a rejection that stopped part-way is completed on retry."""
    reviewer = _validate_reviewer(reviewer)
    if not reason.strip():
        raise ReviewError("--reason must say why the version is rejected")
    _require_git_unlocked(ws)
    _resolved(reg, name, version)  # before the lease, as in approve
    with _one_decision(ws, name, "reject", version):
        return _reject(ws, reg, name, version, reviewer, reason, certificate_sha256)


def _reject(
    ws: Workspace, reg: Registry, name: str, version: str, reviewer: str, reason: str,
    certificate_sha256: str | None,
) -> Decision:  # fmt: skip
    facts = gather_facts(ws, reg, name, version, check_certificate=False)
    tags = reg.resolve(name, version).tags if facts.exists else {}
    if facts.status == "rejected" and _rejection_unfinished(
        ws, name, version, facts, tags.get("batch_id", "")
    ):
        who = tags.get("rejected_by", reviewer)
        _carry_out_rejection(ws, reg, name, version, who, tags.get("rejection_reason", reason))
        return Decision(True, [f"completed the rejection by {who}, which stopped part-way"])
    decision = decide_rejection(facts)
    if not decision.promote:
        _refuse(ws, "reject", name, version, reviewer, decision.text)
    if certificate_sha256 and certificate_sha256 != facts.certificate_sha256:
        why = f"certificate hash {certificate_sha256[:12]}... is not the registered one"
        _refuse(ws, "reject", name, version, reviewer, why)
    _check_duties(ws, name, version, reviewer, tags, approving=False)
    require_signer(ws, "review")
    rejection = {
        "schema": "unlearn.rejection/1",
        "model": name,
        "version": version,
        "decision": "rejected",
        "certificate_sha256": facts.certificate_sha256,
        "reviewer": reviewer,
        "reason": reason[:500],
        "at": utcnow(),
    }
    run_id = reg.resolve(name, version).run_id
    _log_signed(ws, reg, run_id, "rejection", rejection)
    reg.set_tags(
        VersionRef(name, version),
        {
            "status": "rejected",
            "rejected_by": reviewer,
            "rejected_at": rejection["at"],
            "rejection_reason": reason[:500],
        },
        run_id=run_id,
    )
    _carry_out_rejection(ws, reg, name, version, reviewer, reason)
    return decision


def _rejection_unfinished(
    ws: Workspace, name: str, version: str, facts: VersionFacts, batch_id: str
) -> bool:
    match = {"alias": ALIAS_CANDIDATE, "version": None, "previous": version}
    return (
        facts.is_candidate
        or history_state(ws, name, match) != "committed"
        or _awaiting(ws, batch_id)
    )


def _carry_out_rejection(
    ws: Workspace, reg: Registry, name: str, version: str, reviewer: str, reason: str
) -> None:
    """The steps after the status tag, each a no-op when already done."""
    mv = _drop_candidate(reg, name, version)
    record_history(ws, entry(name, ALIAS_CANDIDATE, None, version, reviewer, f"rejected: {reason}"))
    # The rejected batch's snapshot must not stay at HEAD as if it were certified: the data go
    # back to the champion's snapshot, in a commit that says why (history is never rewritten).
    batch_id = mv.tags.get("batch_id", "")
    champion_rev = data_rev(reg.champion(name).tags)
    if batch_id and champion_rev:
        msg = f"{batch_id}: rejected by {reviewer}; data snapshot back to the champion's"
        restore_snapshot(ws, champion_rev, batch_id, msg)
    with RequestStore(ws.requests_db) as store:
        store.transition(
            batch_id,
            "pending",
            reason=f"rejected by {reviewer}: {reason}",
            from_status=("awaiting_approval",),
        )
