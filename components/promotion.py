"""Promotion as a pure decision: may this model version become `champion`?"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class VersionFacts:
    """What the registry and verification found about one model version."""

    exists: bool
    has_certificate: bool
    certificate_problems: tuple[str, ...] = ()
    gates_passed: bool = False
    status: str = ""  # awaiting_approval | approved | rejected | base | ""
    certificate_sha256: str = ""
    is_candidate: bool = False  # holds the `candidate` alias
    base_version: str = ""  # the champion it was unlearned from
    champion_version: str = ""  # the champion now


@dataclass(frozen=True)
class Decision:
    promote: bool
    reasons: list[str] = field(default_factory=list)

    @property
    def text(self) -> str:
        return "; ".join(self.reasons)


def decide_approval(f: VersionFacts, certificate_sha256: str | None = None) -> Decision:
    """Approve only a version that exists, awaits approval, passed its gates and whose certificate
    verifies; if the reviewer names a certificate hash, it must be exactly the registered one."""
    if not f.exists:
        return Decision(False, ["model version does not exist"])
    reasons: list[str] = []
    if f.status == "approved":
        reasons.append("already approved")
    elif f.status == "rejected":
        reasons.append("was rejected; run a new batch")
    elif f.status != "awaiting_approval":
        reasons.append(f"status is {f.status or 'unknown'!r}, not awaiting_approval")
    if f.status == "awaiting_approval" and not f.is_candidate:
        reasons.append(
            "does not hold the candidate alias (a batch that did not finish, or one overtaken by a "
            "later batch); run a new batch"
        )
    if f.base_version and f.champion_version and f.base_version != f.champion_version:
        # Its data snapshot and weights descend from an older champion: approving it would bring
        # back whatever the current champion's batches erased.
        reasons.append(
            f"was built on version {f.base_version}, but the champion is now version "
            f"{f.champion_version}; "
            "approving it would undo that version's erasures; run a new batch"
        )
    if not f.has_certificate:
        reasons.append("has no unlearning certificate")
    reasons += [f"certificate: {p}" for p in f.certificate_problems]
    if f.has_certificate and not f.gates_passed:
        reasons.append("gates did not pass")
    if certificate_sha256 and certificate_sha256 != f.certificate_sha256:
        reasons.append(
            f"certificate hash {certificate_sha256[:12]}... is not the registered "
            f"{f.certificate_sha256[:12]}..."
        )
    if reasons:
        return Decision(False, reasons)
    return Decision(True, [f"certificate {f.certificate_sha256[:12]}... verified; gates passed"])


def decide_rejection(f: VersionFacts) -> Decision:
    if not f.exists:
        return Decision(False, ["model version does not exist"])
    if f.status != "awaiting_approval":
        return Decision(False, [f"status is {f.status or 'unknown'!r}, not awaiting_approval"])
    return Decision(True, ["rejected by reviewer"])


def separation_of_duties(
    reviewer: str, approvers: tuple[str, ...], submitters: set[str], batch_runner: str
) -> list[str]:
    """Why `reviewer` may not decide on a batch (empty: they may). `approvers` empty = no list.
    Whoever submitted one of its requests or ran the batch does not approve their own work."""
    reasons = []
    if approvers and reviewer not in approvers:
        reasons.append(f"{reviewer} is not an approver (review.approvers in params.yaml)")
    if reviewer in submitters:
        reasons.append(f"{reviewer} submitted a request of this batch")
    if reviewer == batch_runner:
        reasons.append(f"{reviewer} ran this batch")
    return reasons
