"""verify's checks of the files around a certificate: the version's other artifacts against the
hashes the certificate signs, the committed audit copy, the workspace's tracked records (data
snapshot pointers, DVC lock, audit logs) against git, and the alias history against the signed
approval. Each returns (check name, ok, detail) rows for the VerifyReport."""

from __future__ import annotations

import json
from pathlib import Path

from components.canonical import sha256_hex
from components.certificate import Certificate
from pipelines.registry import VersionRef
from pipelines.snapshot import dir_listing, object_path
from pipelines.workspace import Workspace, WorkspaceError

Check = tuple[str, bool, str]
# What a batch or decision commits and nothing edits by hand: an uncommitted change here is a
# tamper (or a half-finished command: `unlearn batch recover` finishes those first).
TRACKED = ("dvc.lock", "dvc.yaml", "data", "audit", "params.yaml")
ALIAS_LOG = "audit/alias_history.jsonl"


def artifact_hashes(d: Path, cert: Certificate) -> list[Check]:
    if cert.artifacts is None:
        return [("artifacts", True, "not hashed by this certificate (issued before 2026-12-02)")]
    bad = []
    for fname, want in sorted(cert.artifacts.items()):
        p = d / fname
        if not p.is_file() or sha256_hex(p.read_bytes()) != want:
            bad.append(fname)
    detail = f"differ from the certified sha256: {', '.join(bad)}" if bad else ""
    return [("artifacts", not bad, detail or f"{len(cert.artifacts)} files match the certificate")]


def audit_copy(ws: Workspace, d: Path, ref: VersionRef) -> list[Check]:
    """The certificate and signature committed under audit/certificates equal the version's."""
    base = ws.root / "audit" / "certificates" / ref.name / f"v{ref.version}"
    diffs = [
        suffix
        for suffix, artifact in ((".json", "certificate.json"), (".sig", "certificate.sig"))
        if not base.with_suffix(suffix).is_file()
        or base.with_suffix(suffix).read_bytes() != (d / artifact).read_bytes()
    ]
    detail = f"{base.name}{'/'.join(diffs)} differs from the version's" if diffs else "identical"
    return [("certificate.audit_copy", not diffs, detail)]


def workspace_records(ws: Workspace) -> list[Check]:
    try:
        changed = ws.git("status", "--porcelain", "--", *TRACKED).splitlines()
    except WorkspaceError as err:
        return [("workspace.records", False, str(err))]
    names = sorted(line[3:] for line in changed)
    detail = f"changed since committed: {', '.join(names)}" if names else "as committed in git"
    return [("workspace.records", not names, detail)]


def alias_history(ws: Workspace, ref: VersionRef, approval: dict | None) -> list[Check]:
    """The history's champion move to this version says who approved it, as the signed record."""
    if approval is None:
        return []
    path = ws.root / ALIAS_LOG
    lines = path.read_text().splitlines() if path.is_file() else []
    moves = []
    for line in lines:
        try:
            e = json.loads(line)
        except json.JSONDecodeError:
            return [("alias_history", False, f"{ALIAS_LOG}: a line is not JSON")]
        if e.get("model") == ref.name and e.get("version") == ref.version:
            moves.append(e)
    champion = [
        e
        for e in moves
        if e.get("alias") == "champion" and str(e.get("reason", "")).startswith("approved ")
    ]
    ok = bool(champion) and all(
        e.get("actor") == approval.get("reviewer")
        and approval.get("certificate_sha256", "") in e.get("reason", "")
        for e in champion
    )
    detail = f"champion move by {champion[0].get('actor')}" if champion else "no champion move"
    return [("alias_history", ok, detail + (" matches the approval" if ok else " vs approval"))]


def decision_tags(d: Path, tags: dict) -> list[Check]:
    """The status tag (which the pipeline reads to gate approvals and batches) says what the
    signed decision records beside the certificate say, and names the same reviewer."""
    records = {k: d / f"{k}.json" for k in ("approval", "rejection")}
    decided = {k: json.loads(p.read_text()) for k, p in records.items() if p.is_file()}
    want = {"approval": "approved", "rejection": "rejected"}
    status = next((want[k] for k in decided), "awaiting_approval")
    ok = tags.get("status") == status
    for kind, by in (("approval", "approved_by"), ("rejection", "rejected_by")):
        if kind in decided:
            ok = ok and tags.get(by) == decided[kind].get("reviewer")
    detail = f"status {tags.get('status')!r}" + ("" if ok else f"; the signed records say {status}")
    return [("version.decision", ok, detail)]


def certified_tags(cert: Certificate) -> dict[str, str]:
    """The version tags the certificate also records, as the certificate has them."""
    return {
        "batch_id": cert.batch.id,
        "scenario": cert.batch.scenario,
        "base_version": cert.base_model.version,
        "data.before_rev": cert.data.before.git_rev,
        "data.after_rev": cert.data.after.git_rev,
        "data.dvc_md5": cert.data.after.dvc_md5,
        "data.dataset_sha256": cert.data.after.dataset_sha256,
        "model_digest": cert.unlearned_model.digest,
        "forget_manifest_sha256": cert.forget_manifest.sha256,
        "requests": ",".join(r.id for r in cert.requests),
        **({"batch.ran_by": cert.batch.ran_by} if cert.batch.ran_by else {}),
    }


def evaluation_splits(ws: Workspace, rev: str) -> list[Check]:
    """The test and heldout images of a snapshot (the gates' evidence) are what DVC listed: each
    cached object's md5 is its name (the dataset hash covers the training split only)."""
    import hashlib

    entries = [e for e in dir_listing(ws, rev) if e["relpath"].split("/")[0] in ("test", "heldout")]
    bad, absent = [], 0
    for e in entries:
        p = object_path(ws, e["md5"])
        if not p.is_file():
            absent += 1  # not fetched here (a fresh clone): nothing to compare
        elif hashlib.md5(p.read_bytes()).hexdigest() != e["md5"]:
            bad.append(e["relpath"])
    detail = f"{len(entries) - absent} images match their DVC md5" + (
        f" ({absent} not in the local cache)" if absent else ""
    )
    if bad:
        detail = f"{len(bad)} images differ from their DVC md5: {', '.join(bad[:3])}"
    return [("data.evaluation_splits", not bad, detail)]
