"""The gate policy a certificate was issued under, compared with the previous certified
version's, so a threshold lowered in the workspace params is visible wherever a version is
verified or traced."""

from __future__ import annotations

from typing import Any

from components.certificate import Certificate, flat_diff, parse_certificate
from pipelines.workspace import Workspace


def policy_change(ws: Workspace, cert: Certificate) -> str:
    """The certificate's signed policy against the previous certified version's (the one it was
    built on): what changed, old -> new. A change may be deliberate; a reviewer must see it."""
    base = cert.base_model
    if cert.policy is None:
        return "not recorded (a certificate from before policies were signed)"
    prev = ws.root / "audit" / "certificates" / base.name / f"v{base.version}.json"
    if not prev.is_file():
        return f"recorded; {base.name}/{base.version} (its base) had no certificate"
    before = parse_certificate(prev.read_bytes()).policy or {}
    changes = flat_diff(before, cert.policy)
    if not changes:
        return f"same as {base.name}/{base.version}'s"
    flat_b, flat_a = _flat(before), _flat(cert.policy)
    moved = ", ".join(f"{k} {flat_b.get(k)} -> {flat_a.get(k)}" for k in changes)
    return f"CHANGED since {base.name}/{base.version}: {moved}"


def _flat(doc: dict, prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in doc.items():
        key = f"{prefix}.{k}" if prefix else k
        out.update(_flat(v, key) if isinstance(v, dict) else {key: v})
    return out
