"""The tamper matrix: one byte changed in each certified artifact, record and version tag of an
approved version is caught by `audit verify` (every case, and each names its check), the original
verifies again once restored, and a tampered candidate is refused at approval."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlparse

import pytest

from pipelines.audit import verify
from pipelines.flow import deletion_batch
from pipelines.intake import submit
from pipelines.registry import VersionRef
from pipelines.review import ReviewError, approve
from pipelines.snapshot import dir_listing
from tests.conftest import make_workspace

ARTIFACTS = {  # file in the version's artifact folder -> the check that must fail
    "certificate.json": "certificate.sha256",
    "certificate.sig": "certificate.signature",
    "forget_manifest.json": "forget_manifest.artifact",
    "adapter.safetensors": "artifacts",
    "artifacts/weights.safetensors": "model.weights",
    "gates.json": "artifacts",
    "metrics.json": "artifacts",
    "approval.json": "approval",
}
# dvc.lock (in workspaces whose base came from `dvc repro`, as the demo's) is one of the same
# tracked records, and its committed sha256 is part of each certified snapshot.
WORKSPACE = {  # file in the workspace -> the check that must fail
    "dvc.yaml": "workspace.records",
    "data/raw.dvc": "workspace.records",
    "data/splits.json": "workspace.records",
    "audit/alias_history.jsonl": "alias_history",
}
TAGS = ("batch_id", "scenario", "base_version", "data.before_rev", "data.after_rev",
        "data.dvc_md5", "data.dataset_sha256", "model_digest", "forget_manifest_sha256",
        "requests", "batch.ran_by", "status", "approved_by", "certificate_sha256",
        "certificate_signature")  # fmt: skip


def flip(path: Path, at: int | None = None) -> bytes:
    """Change one byte (in the middle unless `at`); returns the original bytes."""
    raw = path.read_bytes()
    i = len(raw) // 2 if at is None else at
    path.write_bytes(raw[:i] + bytes([raw[i] ^ 0x01]) + raw[i + 1 :])
    return raw


def caught(ws, reg, name, version, check: str) -> list[str]:
    bad = verify(ws, reg, name, version)
    failed = [c for c, ok, _ in bad.checks if not ok]
    assert not bad.ok and check in failed, (check, bad.problems)
    return failed


@pytest.fixture(scope="module")
def approved(tmp_path_factory, prefect_server):
    ws = make_workspace(tmp_path_factory.mktemp("tamper"))
    reg, name = ws.registry(), ws.settings.registry.model_name
    submit(ws, {"kind": "class", "class_label": 6})
    outcome = deletion_batch(str(ws.root))
    assert outcome.status == "awaiting_approval", outcome.reason
    approve(ws, reg, name, outcome.model_version, "alice")
    assert verify(ws, reg, name, outcome.model_version).ok
    return ws, reg, name, outcome.model_version


def _art(reg, name, version) -> Path:
    return Path(urlparse(reg.resolve(name, version).source).path)


@pytest.mark.parametrize("fname", sorted(ARTIFACTS))
def test_one_byte_in_a_version_artifact(approved, fname):
    ws, reg, name, version = approved
    path = _art(reg, name, version) / fname
    at = path.read_bytes().index(b"alice") if fname == "approval.json" else None
    raw = flip(path, at)
    try:
        caught(ws, reg, name, version, ARTIFACTS[fname])
    finally:
        path.write_bytes(raw)
    assert verify(ws, reg, name, version).ok


@pytest.mark.parametrize("fname", sorted(WORKSPACE))
def test_one_byte_in_a_workspace_record(approved, fname):
    ws, reg, name, version = approved
    path = ws.root / fname
    at = path.read_bytes().rindex(b'"alice"') + 2 if fname.endswith(".jsonl") else None
    raw = flip(path, at)
    try:
        caught(ws, reg, name, version, WORKSPACE[fname])
    finally:
        path.write_bytes(raw)
    assert verify(ws, reg, name, version).ok


def test_one_byte_in_the_committed_certificate_copy(approved):
    ws, reg, name, version = approved
    path = ws.root / "audit" / "certificates" / name / f"v{version}.json"
    raw = flip(path)
    try:
        caught(ws, reg, name, version, "certificate.audit_copy")
    finally:
        path.write_bytes(raw)


@pytest.mark.parametrize("split", ["test", "heldout"])
def test_one_byte_in_a_stored_test_or_heldout_image(approved, split):
    """The snapshot's objects in DVC's cache: the dataset hash recomputed from them differs."""
    ws, reg, name, version = approved
    rev = reg.resolve(name, version).tags["data.after_rev"]
    entry = next(e for e in dir_listing(ws, rev) if e["relpath"].startswith(f"{split}/"))
    obj = ws.root / ".dvc" / "cache" / "files" / "md5" / entry["md5"][:2] / entry["md5"][2:]
    obj.chmod(0o644)
    raw = flip(obj)
    try:
        caught(ws, reg, name, version, "data.evaluation_splits")
    finally:
        obj.write_bytes(raw)
    assert verify(ws, reg, name, version).ok


@pytest.mark.parametrize("tag", TAGS)
def test_a_changed_version_tag(approved, tag):
    ws, reg, name, version = approved
    ref = VersionRef(name, version)
    value = reg.resolve(name, version).tags[tag]
    reg.set_tags(ref, {tag: value[:-1] + ("0" if value[-1:] != "0" else "1")})
    try:
        caught(ws, reg, name, version, _tag_check(tag))
    finally:
        reg.set_tags(ref, {tag: value})
    assert verify(ws, reg, name, version).ok


def _tag_check(tag: str) -> str:
    return {
        "status": "version.decision",
        "approved_by": "version.decision",
        "certificate_sha256": "certificate.sha256",
        "certificate_signature": "certificate.signature",
        "model_digest": "model.weights",
    }.get(tag, "version.tags")


def test_a_tampered_candidate_is_refused_at_approval(tmp_path, prefect_server):
    ws = make_workspace(tmp_path)
    reg, name = ws.registry(), ws.settings.registry.model_name
    submit(ws, {"kind": "class", "class_label": 1})
    outcome = deletion_batch(str(ws.root))
    path = _art(reg, name, outcome.model_version) / "adapter.safetensors"
    flip(path)
    with pytest.raises(ReviewError, match="certificate: artifacts: differ from the certified"):
        approve(ws, reg, name, outcome.model_version, "alice")
    assert reg.resolve(name, outcome.model_version).tags["status"] == "awaiting_approval"
