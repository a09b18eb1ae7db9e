"""Reviewer decisions. The decision itself is pure (components/promotion.py); this module gathers
the facts, carries the decision out in a crash-safe order and records it."""

from __future__ import annotations

from components.canonical import canonical_json
from components.certificate import sign, signing_key
from components.promotion import Decision, VersionFacts, decide_approval, decide_rejection
from pipelines.audit import append_alias_history, verify
from pipelines.purge import purge
from pipelines.registry import (
    ALIAS_CANDIDATE,
    ALIAS_CHAMPION,
    Registry,
    RegistryError,
    VersionRef,
    data_rev,
)
from pipelines.snapshot import restore_snapshot
from pipelines.store import RequestStore
from pipelines.workspace import Workspace, WorkspaceError, utcnow


class ReviewError(RuntimeError):
    """The decision refused the approval / rejection; the message lists why."""


def gather_facts(
    ws: Workspace, reg: Registry, name: str, version: str, check_certificate: bool = True
) -> VersionFacts:
    try:
        mv = reg.resolve(name, version)
    except RegistryError:
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


def _validate_reviewer(reviewer: str) -> str:
    reviewer = reviewer.strip()
    if not reviewer or len(reviewer) > 120:
        raise ReviewError("--reviewer must name who decides (1-120 characters)")
    return reviewer


def approve(
    ws: Workspace,
    reg: Registry,
    name: str,
    version: str,
    reviewer: str,
    certificate_sha256: str | None = None,
) -> Decision:
    """Move `champion` to the version if its certificate verifies; requests become certified."""
    reviewer = _validate_reviewer(reviewer)
    facts = gather_facts(ws, reg, name, version)
    decision = decide_approval(facts, certificate_sha256)
    if not decision.promote:
        raise ReviewError(f"cannot approve {name}/{version}: {decision.text}")
    key = signing_key(ws.settings.certificate.key_env)
    ref = VersionRef(name, version)
    mv = reg.resolve(name, version)
    approval = {
        "schema": "unlearn.approval/1",
        "model": name,
        "version": version,
        "decision": "approved",
        "certificate_sha256": facts.certificate_sha256,
        "reviewer": reviewer,
        "at": utcnow(),
    }
    previous = reg.champion(name).version if reg.has_alias(name, ALIAS_CHAMPION) else None
    # Order matters for crash safety: the signed record first, then the alias, then the requests.
    reg.log_to_run(
        mv.run_id,
        {"approval.json": canonical_json(approval), "approval.sig": sign(approval, key).encode()},
    )
    reg.set_tags(
        ref, {"status": "approved", "approved_by": reviewer, "approved_at": approval["at"]}
    )
    reg.set_alias(ref, ALIAS_CHAMPION)
    reg.drop_alias(name, ALIAS_CANDIDATE)
    append_alias_history(
        ws,
        {
            "model": name,
            "alias": ALIAS_CHAMPION,
            "version": version,
            "previous": previous,
            "actor": reviewer,
            "reason": f"approved certificate {facts.certificate_sha256}",
        },
    )
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
    return decision


def reject(
    ws: Workspace, reg: Registry, name: str, version: str, reviewer: str, reason: str
) -> Decision:
    """Mark the version rejected, drop `candidate`; its requests go back to pending, with why."""
    reviewer = _validate_reviewer(reviewer)
    if not reason.strip():
        raise ReviewError("--reason must say why the version is rejected")
    facts = gather_facts(ws, reg, name, version, check_certificate=False)
    decision = decide_rejection(facts)
    if not decision.promote:
        raise ReviewError(f"cannot reject {name}/{version}: {decision.text}")
    mv = reg.resolve(name, version)
    reg.set_tags(
        VersionRef(name, version),
        {
            "status": "rejected",
            "rejected_by": reviewer,
            "rejected_at": utcnow(),
            "rejection_reason": reason[:500],
        },
    )
    reg.drop_alias(name, ALIAS_CANDIDATE)
    append_alias_history(
        ws,
        {
            "model": name,
            "alias": ALIAS_CANDIDATE,
            "version": None,
            "previous": version,
            "actor": reviewer,
            "reason": f"rejected: {reason}",
        },
    )
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
    return decision
