"""Audit: `verify` recomputes every hash of a model version from MLflow and DVC; `trace` walks the
lineage chain; the alias history is an append-only JSON-lines file committed to the workspace."""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from components.canonical import canonical_json, sha256_hex
from components.certificate import (
    CertificateError,
    certificate_digest,
    flat_diff,
    signing_key,
    verify_signature,
)
from components.forget import forget_manifest, manifest_sha256
from components.models import ModelError, model_digest
from pipelines.registry import Registry, RegistryError, VersionRef, read_model_dir
from pipelines.snapshot import commit_files, read_split, snapshot_info
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


def _check_snapshot(ws: Workspace, report: VerifyReport, label: str, expected: dict) -> None:
    try:
        got = snapshot_info(ws, expected["git_rev"]).to_dict()
    except WorkspaceError as err:
        report.add(f"data.{label}", False, str(err))
        return
    diffs = [k for k in expected if expected[k] != got.get(k)]
    report.add(
        f"data.{label}",
        not diffs,
        f"{', '.join(diffs)} differ from DVC at {expected['git_rev'][:10]}"
        if diffs
        else f"git {expected['git_rev'][:10]}, dvc {got['dvc_md5'][:10]}, dataset {got['dataset_sha256'][:10]} recomputed",
    )


def _expected_manifest(ws: Workspace, before_rev: str, after_rev: str) -> dict:
    """The forget manifest recomputed from DVC: samples in the before snapshot missing after
    (found from the two listings; only the missing samples' pixels are read)."""
    before_ids = read_split(ws, before_rev, "train", pixels=False).ids
    after_ids = read_split(ws, after_rev, "train", pixels=False).ids
    gone = set(before_ids.tolist()) - set(after_ids.tolist())
    return forget_manifest(read_split(ws, before_rev, "train", ids=gone))


def verify(ws: Workspace, reg: Registry, name: str, version: str) -> VerifyReport:
    """Every check of a version; the report lists each with what was compared."""
    mv = reg.resolve(name, version)
    ref = VersionRef(name, str(mv.version))
    report = VerifyReport(ref)
    tags = mv.tags
    key = signing_key(ws.settings.certificate.key_env)
    with tempfile.TemporaryDirectory() as tmp:
        d = reg.download(ref, Path(tmp))
        try:
            model, _ = read_model_dir(d)
            digest = model_digest(model)
            report.add(
                "model.weights",
                digest == tags.get("model_digest"),
                f"sha256 {digest[:12]} vs registered {tags.get('model_digest', '')[:12]}",
            )
        except (ModelError, OSError, json.JSONDecodeError) as err:
            report.add("model.weights", False, f"{ref}: {err}")
            digest = ""
        if tags.get("kind") == "base":
            _check_snapshot(
                ws,
                report,
                "trained_on",
                {
                    "git_rev": tags.get("data.rev", ""),
                    "dvc_md5": tags.get("data.dvc_md5"),
                    "dataset_sha256": tags.get("data.dataset_sha256"),
                },
            )
            return report
        raw = _read(d, "certificate.json")
        if raw is None:
            report.add("certificate", False, "no certificate.json among the version's artifacts")
            return report
        try:
            cert = json.loads(raw)
        except json.JSONDecodeError as err:
            report.add(
                "certificate",
                False,
                f"certificate.json is not valid JSON ({err.msg} at byte {err.pos})",
            )
            return report
        cert_sha = sha256_hex(raw)
        ok = cert_sha == tags.get("certificate_sha256") and raw == canonical_json(cert)
        detail = f"sha256 {cert_sha[:12]} matches the registered hash"
        if not ok:
            detail = f"certificate.json sha256 {cert_sha[:12]} differs from registered {tags.get('certificate_sha256', '')[:12]}"
            copy = ws.root / "audit" / "certificates" / name / f"v{version}.json"
            if copy.is_file():
                changed = flat_diff(json.loads(copy.read_text()), cert)
                detail += f"; fields changed vs the committed audit copy: {', '.join(changed) or 'formatting only'}"
        report.add("certificate.sha256", ok, detail)
        sig = (_read(d, "certificate.sig") or b"").decode()
        report.add(
            "certificate.signature",
            verify_signature(cert, sig, key) and sig == tags.get("certificate_signature"),
            "HMAC-SHA256 over the canonical certificate",
        )
        man_raw = _read(d, "forget_manifest.json")
        man_sha = sha256_hex(man_raw) if man_raw is not None else "missing"
        want = cert.get("forget_manifest", {}).get("sha256")
        detail = f"sha256 {man_sha[:12]}"
        if man_sha != want and man_raw is not None:
            try:
                expected = _expected_manifest(
                    ws, cert["data"]["before"]["git_rev"], cert["data"]["after"]["git_rev"]
                )
                changed = flat_diff(expected, json.loads(man_raw))
                detail = f"forget_manifest.json sha256 {man_sha[:12]} differs from the certificate's {str(want)[:12]}; changed: {', '.join(changed[:5]) or 'formatting'}"
            except (json.JSONDecodeError, KeyError, WorkspaceError) as err:
                detail = f"forget_manifest.json sha256 {man_sha[:12]} differs from the certificate's {str(want)[:12]} ({err})"
        report.add("forget_manifest.artifact", man_sha == want, detail)
        data = cert.get("data", {})
        try:
            recomputed = manifest_sha256(
                _expected_manifest(ws, data["before"]["git_rev"], data["after"]["git_rev"])
            )
            report.add(
                "forget_manifest.dvc",
                recomputed == want,
                f"recomputed from the DVC snapshots: {recomputed[:12]}",
            )
        except (KeyError, WorkspaceError) as err:
            report.add("forget_manifest.dvc", False, str(err))
        for label in ("before", "after"):
            if label in data:
                _check_snapshot(ws, report, label, data[label])
        um = cert.get("unlearned_model", {})
        report.add(
            "certificate.model",
            um.get("digest") == digest and str(um.get("version")) == ref.version,
            f"certificate binds {um.get('name')}/{um.get('version')} digest {str(um.get('digest'))[:12]}",
        )
        bm = cert.get("base_model", {})
        try:
            base, _ = reg.load_model(VersionRef(name, str(bm.get("version"))))
            report.add(
                "certificate.base_model",
                model_digest(base) == bm.get("digest"),
                f"base {name}/{bm.get('version')}",
            )
        except (RegistryError, ModelError) as err:
            report.add("certificate.base_model", False, str(err))
        report.add(
            "gates",
            bool(cert.get("gates", {}).get("passed")),
            "all gates passed" if cert.get("gates", {}).get("passed") else "a gate failed",
        )
        if tags.get("status") == "approved":
            _check_approval(d, cert_sha, key, report)
    return report


def _check_approval(d: Path, cert_sha: str, key: bytes, report: VerifyReport) -> None:
    raw = _read(d, "approval.json")
    if raw is None:
        report.add("approval", False, "status is approved but approval.json is missing")
        return
    approval = json.loads(raw)
    sig = (_read(d, "approval.sig") or b"").decode()
    ok = verify_signature(approval, sig, key) and approval.get("certificate_sha256") == cert_sha
    report.add(
        "approval",
        ok,
        f"approved by {approval.get('reviewer')} at {approval.get('at')} for certificate {str(approval.get('certificate_sha256'))[:12]}",
    )


def append_alias_history(ws: Workspace, entry: dict) -> None:
    path = ws.root / ALIAS_LOG
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        f.write(json.dumps({"at": utcnow(), **entry}, sort_keys=True) + "\n")
    commit_files(
        ws,
        [ALIAS_LOG],
        f"alias {entry.get('alias')} -> {entry.get('model')}/{entry.get('version')} by {entry.get('actor')}",
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
                    "sha256": certificate_digest(cert),
                    "requests": cert.get("requests", []),
                    "gates": [
                        (g["name"], g["value"], g["effective_threshold"], g["passed"])
                        for g in cert["gates"]["gates"]
                    ],
                    "forget_count": cert["forget_manifest"]["count"],
                    "data": cert["data"],
                }
            appr = _read(d, "approval.json")
            if appr is not None:
                entry["approval"] = json.loads(appr)
        chain.append(entry)
        if tags.get("kind") != "unlearned" or not tags.get("base_version"):
            return chain
        mv = reg.resolve(name, tags["base_version"])


__all__ = ["verify", "trace", "append_alias_history", "VerifyReport", "CertificateError"]
