"""Audit: `verify` recomputes every hash of a model version from MLflow and DVC; `trace` walks the
lineage chain; the alias history is an append-only JSON-lines file committed to the workspace."""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from components.canonical import canonical_json, sha256_hex
from components.certificate import (
    Certificate,
    CertificateError,
    DataFacts,
    ModelRef,
    flat_diff,
    parse_certificate,
)
from components.forget import forget_manifest, manifest_sha256, removed_ids
from components.models import ModelError, model_digest
from pipelines.audit_files import (
    alias_history,
    artifact_hashes,
    audit_copy,
    certified_tags,
    decision_tags,
    evaluation_splits,
    workspace_records,
)
from pipelines.keys import check
from pipelines.policy import policy_change
from pipelines.purge import (
    PURGE_LOG,
    deleted_versions,
    deletion_note,
    object_copies,
    object_stores,
    purge_records,
    purged_objects,
)
from pipelines.registry import Registry, RegistryError, VersionRef, read_model_dir
from pipelines.snapshot import commit_files, dir_listing, dir_md5, read_split, snapshot_info
from pipelines.workspace import Workspace, WorkspaceError, utcnow

ALIAS_LOG = "audit/alias_history.jsonl"


@dataclass
class VerifyReport:
    ref: VersionRef
    checks: list[tuple[str, bool, str]] = field(default_factory=list)

    def add(self, name: str, ok: bool, detail: str = "") -> None:
        self.checks.append((name, bool(ok), detail))

    @property
    def ok(self) -> bool:
        return bool(self.checks) and all(ok for _, ok, _ in self.checks)

    @property
    def problems(self) -> list[str]:
        return [f"{n}: {d}" for n, ok, d in self.checks if not ok]


def _read(d: Path, name: str) -> bytes | None:
    p = d / name
    return p.read_bytes() if p.is_file() else None


def _purged_in(ws: Workspace, rev: str, purged: dict[str, str]) -> dict[str, str]:
    """Samples of the snapshot at `rev` whose objects a purge removed: relpath -> by version."""
    if not purged:  # purged_objects(ws), read once per verify
        return {}
    return {e["relpath"]: purged[e["md5"]] for e in dir_listing(ws, rev) if e["md5"] in purged}


def _check_snapshot(
    ws: Workspace, report: VerifyReport, label: str, expected: dict, purged: dict[str, str]
) -> None:
    rev = expected["git_rev"]
    try:
        gone = _purged_in(ws, rev, purged)
        if gone:  # the listing is still checkable; the pixels of purged samples are gone
            md5 = dir_md5(ws, rev)
            by = ", ".join(sorted(set(gone.values())))
            detail = (
                f"git {rev[:10]}, dvc {md5[:10]}; dataset hash not recomputable: "
                f"{len(gone)} samples purged after {by} ({PURGE_LOG})"
            )
            report.add(f"data.{label}", md5 == expected["dvc_md5"], detail)
            return
        got = snapshot_info(ws, rev).to_dict()
    except WorkspaceError as err:
        report.add(f"data.{label}", False, str(err))
        return
    diffs = [k for k in expected if expected[k] != got.get(k)]
    report.add(
        f"data.{label}",
        not diffs,
        f"{', '.join(diffs)} differ from DVC at {expected['git_rev'][:10]}"
        if diffs
        else f"git {expected['git_rev'][:10]}, dvc {got['dvc_md5'][:10]}, "
        f"dataset {got['dataset_sha256'][:10]} recomputed",
    )


def _expected_manifest(ws: Workspace, data: DataFacts) -> dict:
    """The forget manifest recomputed from DVC: the samples of the before snapshot missing after
    (found from the two listings; only the missing samples' pixels are read)."""
    before_ids = read_split(ws, data.before.git_rev, "train", pixels=False).ids
    after_ids = read_split(ws, data.after.git_rev, "train", pixels=False).ids
    gone = removed_ids(before_ids, after_ids)
    return forget_manifest(read_split(ws, data.before.git_rev, "train", ids=gone))


def verify(ws: Workspace, reg: Registry, name: str, version: str) -> VerifyReport:
    """Every check of a version; the report lists each with what was compared."""
    deleted = deleted_versions(ws)
    if (name, version) in deleted:
        raise RegistryError(f"{name}/{version} was {deletion_note(deleted[name, version])}")
    mv = reg.resolve(name, version)
    ref = VersionRef(name, str(mv.version))
    report = VerifyReport(ref)
    tags = mv.tags
    purged = purged_objects(ws)  # object md5 -> the version whose purge removed it
    with tempfile.TemporaryDirectory() as tmp:
        d = reg.download(ref, Path(tmp))
        digest = _check_weights(d, ref, tags, report)
        if tags.get("kind") == "base":
            trained_on = {
                "git_rev": tags.get("data.rev", ""),
                "dvc_md5": tags.get("data.dvc_md5"),
                "dataset_sha256": tags.get("data.dataset_sha256"),
            }
            _check_snapshot(ws, report, "trained_on", trained_on, purged)
            return report
        cert = _check_certificate(ws, d, ref, tags, report)
        if cert is None:
            return report
        _check_tags(cert, tags, report)
        for row in (
            artifact_hashes(d, cert)
            + audit_copy(ws, d, ref)
            + workspace_records(ws)
            + decision_tags(d, tags)
            + evaluation_splits(ws, cert.data.after.git_rev)
        ):
            report.add(*row)
        _check_manifest(ws, d, cert, report, purged)
        for label in ("before", "after"):
            _check_snapshot(ws, report, label, getattr(cert.data, label).model_dump(), purged)
        um = cert.unlearned_model
        report.add(
            "certificate.model",
            um.digest == digest and um.version == ref.version,
            f"certificate binds {um.name}/{um.version} digest {um.digest[:12]}",
        )
        base = cert.base_model
        if (base.name, base.version) in deleted:  # the signed digest stays; the weights went
            note = deletion_note(deleted[base.name, base.version])
            report.add("certificate.base_model", True, f"base {base.name}/{base.version} {note}")
        else:
            _check_base_model(reg, base, report)
        report.add("policy", True, policy_change(ws, cert))
        passed = bool(cert.gates.get("passed"))
        report.add("gates", passed, "all gates passed" if passed else "a gate failed")
        if tags.get("status") == "approved":
            for row in alias_history(ws, ref, _check_approval(ws, d, cert.digest(), report)):
                report.add(*row)
            _check_purge(ws, ref, report)
    return report


def _check_weights(d: Path, ref: VersionRef, tags: dict, report: VerifyReport) -> str:
    """The weights' digest recomputed from the downloaded model; "" if unreadable."""
    try:
        model, _ = read_model_dir(d)
    except (ModelError, OSError, json.JSONDecodeError) as err:
        report.add("model.weights", False, f"{ref}: {err}")
        return ""
    digest = model_digest(model)
    registered = tags.get("model_digest", "")
    detail = f"sha256 {digest[:12]} vs registered {registered[:12]}"
    report.add("model.weights", digest == registered, detail)
    return digest


def _check_certificate(
    ws: Workspace, d: Path, ref: VersionRef, tags: dict, report: VerifyReport
) -> Certificate | None:
    """The stored certificate: present, typed, its bytes hashed as registered and signed."""
    raw = _read(d, "certificate.json")
    if raw is None:
        report.add("certificate", False, "no certificate.json among the version's artifacts")
        return None
    cert_sha, registered = sha256_hex(raw), tags.get("certificate_sha256", "")
    try:
        doc = json.loads(raw)
    except json.JSONDecodeError:
        doc = None
    ok = cert_sha == registered and doc is not None and raw == canonical_json(doc)
    report.add("certificate.sha256", ok, _sha_detail(ws, ref, raw, cert_sha, registered, doc))
    sig = (_read(d, "certificate.sig") or b"").decode()
    ok, how = check(ws, raw, sig, "batch") if doc is not None else (False, "no certificate")
    report.add(
        "certificate.signature",
        ok and sig == tags.get("certificate_signature"),
        f"{how}, over the canonical certificate",
    )
    try:
        return parse_certificate(raw)
    except CertificateError as err:
        report.add("certificate", False, f"certificate.json: {err}")
        return None


def _sha_detail(
    ws: Workspace, ref: VersionRef, raw: bytes, sha: str, registered: str, doc: dict | None
) -> str:
    """What the hash check compared; on a mismatch, the fields changed vs the committed copy."""
    if sha == registered:
        return f"sha256 {sha[:12]} matches the registered hash"
    detail = f"certificate.json sha256 {sha[:12]} differs from registered {registered[:12]}"
    copy = ws.root / "audit" / "certificates" / ref.name / f"v{ref.version}.json"
    if copy.is_file():
        changed = ", ".join(flat_diff(json.loads(copy.read_text()), doc)) if doc else "not JSON"
        detail += f"; fields changed vs the committed audit copy: {changed or 'formatting only'}"
    return detail


def _check_tags(cert: Certificate, tags: dict, report: VerifyReport) -> None:
    """Tags the pipeline reads (data.after_rev, base_version, ...) must say what was signed."""
    want = certified_tags(cert)
    changed = sorted(k for k, v in want.items() if tags.get(k) != v)
    detail = f"{len(want)} tags match the certificate"
    if changed:
        detail = f"tags differ from the signed certificate: {', '.join(changed)}"
    report.add("version.tags", not changed, detail)


def _check_manifest(
    ws: Workspace, d: Path, cert: Certificate, report: VerifyReport, purged: dict[str, str]
) -> None:
    """The stored forget manifest, and the one recomputed from the two DVC snapshots."""
    man_raw = _read(d, "forget_manifest.json")
    man_sha = sha256_hex(man_raw) if man_raw is not None else "missing"
    want = cert.forget_manifest.sha256
    detail = f"sha256 {man_sha[:12]}"
    expected: dict | None = None
    try:
        if _purged_in(ws, cert.data.before.git_rev, purged):
            _check_manifest_ids(ws, cert, man_raw, report)
        else:
            expected = _expected_manifest(ws, cert.data)
    except WorkspaceError as err:
        report.add("forget_manifest.dvc", False, str(err))
    if man_sha != want and man_raw is not None:
        detail = (
            f"forget_manifest.json sha256 {man_sha[:12]} differs from the certificate's {want[:12]}"
        )
        try:
            if expected is None:  # nothing to compare with: the samples' pixels were purged
                detail += "; the changed field cannot be named: the erased samples were purged"
            else:
                changed = flat_diff(expected, json.loads(man_raw))
                detail += f"; changed: {', '.join(changed[:5]) or 'formatting'}"
        except json.JSONDecodeError as err:
            detail += f" ({err})"
    report.add("forget_manifest.artifact", man_sha == want, detail)
    if expected is not None:
        recomputed = manifest_sha256(expected)
        detail = f"recomputed from the DVC snapshots: {recomputed[:12]}"
        report.add("forget_manifest.dvc", recomputed == want, detail)


def _check_manifest_ids(
    ws: Workspace, cert: Certificate, raw: bytes | None, report: VerifyReport
) -> None:
    """After a purge the erased samples' pixels are gone: the manifest's ids are checked against
    the two DVC listings, its content hashes can no longer be recomputed (by design)."""
    before = read_split(ws, cert.data.before.git_rev, "train", pixels=False).ids
    after = read_split(ws, cert.data.after.git_rev, "train", pixels=False).ids
    gone = sorted(removed_ids(before, after))
    try:
        listed = [s["id"] for s in json.loads(raw or b"{}").get("samples", [])]
    except (json.JSONDecodeError, AttributeError, TypeError):
        listed = []
    detail = f"{len(gone)} sample ids match the DVC listings; content hashes purged with the data"
    if listed != gone:
        detail = f"manifest ids differ from the samples the DVC listings show erased ({len(gone)})"
    report.add("forget_manifest.dvc", listed == gone, detail)


def _check_purge(ws: Workspace, ref: VersionRef, report: VerifyReport) -> None:
    """Every object a purge of this version removed is absent from the cache and the remote."""
    mine = [r for r in purge_records(ws) if (r["model"], r["version"]) == (ref.name, ref.version)]
    stores = object_stores(ws) if any(not r["legal_hold"] for r in mine) else []  # DVC read once
    for r in mine:
        if r["legal_hold"]:
            report.add("data.purged", True, f"kept under legal hold since {r['at']} ({r['actor']})")
            continue
        back = [md5 for md5 in r["objects"] if any(c.exists() for c in object_copies(stores, md5))]
        detail = f"{len(r['objects'])} erased objects absent from DVC cache and remote"
        if back:
            detail = f"{len(back)} purged objects are back in storage, e.g. {back[0]}"
        report.add("data.purged", not back, detail + f" (purged {r['at']} by {r['actor']})")


def _check_base_model(reg: Registry, base: ModelRef, report: VerifyReport) -> None:
    try:
        model, _ = reg.load_model(VersionRef(base.name, base.version))
        ok = model_digest(model) == base.digest
        report.add("certificate.base_model", ok, f"base {base.name}/{base.version}")
    except (RegistryError, ModelError) as err:
        report.add("certificate.base_model", False, str(err))


def _check_approval(ws: Workspace, d: Path, cert_sha: str, report: VerifyReport) -> dict | None:
    raw = _read(d, "approval.json")
    try:
        approval = json.loads(raw) if raw is not None else None
    except json.JSONDecodeError:
        approval = None
    if not isinstance(approval, dict):
        report.add("approval", False, "status is approved but approval.json is missing or not JSON")
        return None
    sig = (_read(d, "approval.sig") or b"").decode()
    signed, how = check(ws, canonical_json(approval), sig, "review")
    ok = signed and approval.get("certificate_sha256") == cert_sha
    report.add(
        "approval",
        ok,
        f"approved by {approval.get('reviewer')} at {approval.get('at')} for certificate "
        f"{str(approval.get('certificate_sha256'))[:12]} ({how})",
    )
    return approval


def append_alias_history(ws: Workspace, entry: dict) -> None:
    path = ws.root / ALIAS_LOG
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        f.write(json.dumps({"at": utcnow(), **entry}, sort_keys=True) + "\n")
    commit_files(
        ws,
        [ALIAS_LOG],
        f"alias {entry.get('alias')} -> {entry.get('model')}/{entry.get('version')} by "
        f"{entry.get('actor')}",
    )


def trace(
    ws: Workspace, reg: Registry, name: str, version: str | None = None, alias: str | None = None
) -> list[dict]:
    """The lineage chain from the given version back to the base model, newest first."""
    chain: list[dict] = []
    mv = reg.resolve(name, version, alias)
    while True:
        tags = dict(mv.tags)
        entry = {"version": str(mv.version), "aliases": list(mv.aliases or []), **tags}
        with tempfile.TemporaryDirectory() as tmp:
            d = reg.download(VersionRef(name, str(mv.version)), Path(tmp))
            raw = _read(d, "certificate.json")
            if raw is not None:
                cert = json.loads(raw)
                entry["certificate"] = {
                    "sha256": sha256_hex(raw),
                    "requests": cert.get("requests", []),
                    "gates": [
                        (g["name"], g["value"], g["effective_threshold"], g["passed"])
                        for g in cert["gates"]["gates"]
                    ],
                    "forget_count": cert["forget_manifest"]["count"],
                    "data": cert["data"],
                    "policy": policy_change(ws, parse_certificate(raw)),
                }
            appr = _read(d, "approval.json")
            if appr is not None:
                entry["approval"] = json.loads(appr)
        chain.append(entry)
        if tags.get("kind") != "unlearned" or not tags.get("base_version"):
            return chain
        gone = deleted_versions(ws).get((name, tags["base_version"]))
        if gone is not None:
            return [*chain, {"version": tags["base_version"], "deleted": deletion_note(gone)}]
        mv = reg.resolve(name, tags["base_version"])


__all__ = ["verify", "trace", "append_alias_history", "VerifyReport", "CertificateError"]
