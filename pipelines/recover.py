"""Recovering a batch that did not finish: its process was killed (`kill -9`, out of memory, a lost
machine) or its lease ran out, so no `except` or `finally` of its own ever ran.

What it left is read back from where each step writes, in the order `publish` writes it: a
version aliased `candidate` is a complete result (its requests go on to awaiting approval);
anything less is removed (registered versions without the alias, runs left RUNNING, its scratch
folder) and the data snapshot at HEAD is put back to the champion's with a commit saying why. Its
requests return to `pending` with the reason. Nothing of a crashed batch is lost, and nothing
half-written stays.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from datetime import timedelta

from pipelines.lease import Lease
from pipelines.lease_keeper import holding
from pipelines.registry import ALIAS_CANDIDATE, ALIAS_CHAMPION, Registry, VersionRef, data_rev
from pipelines.snapshot import restore_snapshot
from pipelines.store import RequestStore
from pipelines.workspace import Workspace


@dataclass
class Recovered:
    """What recovering one batch did, for the CLI and the request history."""

    batch_id: str
    why: str
    requests: int = 0
    candidate: str = ""  # the version kept as a complete candidate, if any
    removed_versions: list[str] = field(default_factory=list)
    restored_to: str = ""  # the git commit whose data snapshot HEAD holds again

    def text(self) -> str:
        if self.candidate:
            parts = [f"kept its complete candidate version {self.candidate}"]
        else:
            parts = [f"{self.requests} requests back to pending"]
        if self.removed_versions:
            parts.append(f"removed versions {', '.join(self.removed_versions)}")
        if self.restored_to:
            parts.append(f"data snapshot restored to {self.restored_to[:10]}")
        return f"recovered {self.batch_id} ({self.why}): {'; '.join(parts)}"


def stale_batches(store: RequestStore, model: str, replaced: Lease | None) -> dict[str, str]:
    """Batches to recover, with why: the one whose lease was just replaced, and any batch whose
    requests are still `processing` without holding the lease (crashed before leases existed, or
    between claiming and leasing)."""
    out = {replaced.batch_id: replaced.stale()} if replaced is not None else {}
    live = store.lease(model)
    for r in store.list("processing"):
        if r.batch_id not in out and (live is None or r.batch_id != live.batch_id):
            out[r.batch_id] = "it holds no lease"
    return out


def recover_batch(
    ws: Workspace, store: RequestStore, reg: Registry, name: str, batch_id: str, why: str
) -> Recovered:
    """Finish or undo one batch that stopped without cleaning up after itself."""
    rec = undo_batch(ws, reg, name, batch_id, why)
    if rec.candidate:
        store.transition(batch_id, "awaiting_approval", model_version=rec.candidate)
        return rec
    rec.requests = store.transition(
        batch_id, "pending", reason=f"batch {batch_id} did not finish ({why}); pending again"
    )
    return rec


def undo_batch(ws: Workspace, reg: Registry, name: str, batch_id: str, why: str) -> Recovered:
    """What a batch wrote before it stopped part-way, removed: its scratch, versions that never
    became the candidate, runs left RUNNING, its data snapshot at HEAD (put back to the
    champion's with a commit saying `why`). A complete candidate is kept and named instead.
    Its requests are the caller's to move. The caller holds the model's lease."""
    rec = Recovered(batch_id, why)
    shutil.rmtree(ws.batch_dir(batch_id), ignore_errors=True)  # its scratch: never reused
    mine = [v for v in reg.versions(name) if v.tags.get("batch_id") == batch_id]
    # The alias is the last thing publish sets: a version holding it is complete. (Version
    # searches do not return aliases: ask for the alias itself.)
    if reg.has_alias(name, ALIAS_CANDIDATE):
        candidate = reg.resolve(name, alias=ALIAS_CANDIDATE)
        if candidate.tags.get("batch_id") == batch_id:
            rec.candidate = str(candidate.version)
            return rec
    for v in mine:
        reg.delete_version(VersionRef(name, str(v.version)))
        rec.removed_versions.append(str(v.version))
    reg.fail_runs(batch_id)
    copies = tuple(
        f"audit/certificates/{name}/v{v}.{ext}"
        for v in rec.removed_versions
        for ext in ("json", "sig")
    )
    champion_rev = (
        data_rev(reg.champion(name).tags) if reg.has_alias(name, ALIAS_CHAMPION) else None
    )
    if champion_rev:
        msg = f"{batch_id}: did not finish ({why}); data snapshot restored"
        rec.restored_to = restore_snapshot(ws, champion_rev, batch_id, msg, copies)
    return rec


def recover_stale(
    ws: Workspace, store: RequestStore, reg: Registry, name: str, replaced: Lease | None
) -> list[Recovered]:
    """Recover every batch of `name` that stopped without cleaning up (the caller holds the
    model's lease, so none of them can still be running)."""
    return [
        recover_batch(ws, store, reg, name, batch_id, why)
        for batch_id, why in stale_batches(store, name, replaced).items()
    ]


def recover_now(ws: Workspace, holder: str) -> list[Recovered]:
    """Recover what a dead batch of the workspace's model left, under the model's lease (taken
    as `holder`, dropped after). LeaseHeld when a batch that is alive holds it."""
    name, reg = ws.settings.registry.model_name, ws.registry()
    lease = holding(ws.requests_db, name, holder, timedelta(minutes=10))
    with lease as replaced, RequestStore(ws.requests_db) as store:
        return recover_stale(ws, store, reg, name, replaced)
