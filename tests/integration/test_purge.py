"""Purge and prove: an approved erasure also leaves the DVC cache and remote, `audit verify`
proves it, and the versions whose snapshots held the samples still verify (as purged)."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from pipelines.audit import trace, verify
from pipelines.flow import deletion_batch
from pipelines.intake import submit
from pipelines.purge import erased_objects, object_copies, object_stores, purge_records
from pipelines.registry import RegistryError
from pipelines.review import approve
from tests.conftest import make_workspace
from tests.integration.test_integration import _artifact_dir, flip_first_sample_hash


def _approved_class_batch(ws):
    reg, name = ws.registry(), ws.settings.registry.model_name
    submit(ws, {"kind": "class", "class_label": 3})
    outcome = deletion_batch(str(ws.root))
    assert outcome.status == "awaiting_approval", outcome.reason
    tags = reg.resolve(name, outcome.model_version).tags
    objects, shared = erased_objects(ws, tags["data.before_rev"], tags["data.after_rev"])
    approve(ws, reg, name, outcome.model_version, "alice")
    return reg, name, outcome.model_version, objects + shared


def test_approval_purges_the_erased_samples_and_verify_proves_it(tmp_path, prefect_server):
    ws = make_workspace(tmp_path)
    reg, name, version, objects = _approved_class_batch(ws)
    assert len(objects) > 50  # every image of the class
    copies = [Path(c.path) for md5 in objects for c in object_copies(object_stores(ws), md5)]
    assert len(copies) == 2 * len(objects) and not any(p.exists() for p in copies)
    assert {p.parts[-5] for p in copies} == {"cache", "dvc-remote"}  # cache, then the remote
    (record,) = purge_records(ws)
    assert record["actor"] == "alice" and record["files_removed"] == len(copies)
    # The base still carries the class in its weights: archived (default policy), same record.
    assert record["earlier_versions"] == [{"version": "1", "action": "archived"}]
    assert reg.resolve(name, "1").tags["retired"] == "archived"
    assert ws.git("log", "-1", "--format=%s").startswith(f"{name}/{version}: ")
    report = verify(ws, reg, name, version)
    assert report.ok, report.problems
    details = {n: d for n, _, d in report.checks}
    assert "erased objects absent from DVC cache and remote" in details["data.purged"]
    assert "content hashes purged with the data" in details["forget_manifest.dvc"]
    base = verify(ws, reg, name, "1")  # its snapshot held the class: reported, not broken
    assert base.ok, base.problems
    assert "samples purged after" in {n: d for n, _, d in base.checks}["data.trained_on"]
    # One object copied back into the cache (a restored backup, say): verify names it.
    cache = copies[0]
    cache.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(ws.root / "params.yaml", cache)
    bad = verify(ws, reg, name, version)
    assert [p.split(":")[0] for p in bad.problems] == ["data.purged"]
    assert "purged objects are back in storage" in bad.problems[0]


def test_a_legal_hold_keeps_the_objects_and_says_so(tmp_path, prefect_server):
    ws = make_workspace(tmp_path, {"requests": {"legal_hold": True}})
    reg, name, version, objects = _approved_class_batch(ws)
    stores = object_stores(ws)
    assert all(c.exists() for md5 in objects for c in object_copies(stores, md5))
    (record,) = purge_records(ws)
    assert record["legal_hold"] and record["files_removed"] == 0
    assert record["earlier_versions"] == [] and "retired" not in reg.resolve(name, "1").tags
    report = verify(ws, reg, name, version)
    assert (
        report.ok and "kept under legal hold" in {n: d for n, _, d in report.checks}["data.purged"]
    )
    # The pixels are still there, so a changed manifest is diffed field by field.
    flip_first_sample_hash(_artifact_dir(reg, name, version) / "forget_manifest.json")
    bad = verify(ws, reg, name, version)
    assert [p.split(":")[0] for p in bad.problems] == ["forget_manifest.artifact"]
    assert "samples[0].sha256" in bad.problems[0]


def test_the_delete_policy_removes_earlier_weights_and_the_chain_still_verifies(
    tmp_path, prefect_server
):
    ws = make_workspace(tmp_path, {"requests": {"earlier_versions": "delete"}})
    base_weights = _artifact_dir(ws.registry(), "digits-cnn", "1") / "artifacts"
    assert (base_weights / "weights.safetensors").is_file()
    reg, name, version, _ = _approved_class_batch(ws)
    (record,) = purge_records(ws)
    assert record["earlier_versions"] == [{"version": "1", "action": "deleted"}]
    assert [str(v.version) for v in reg.versions(name)] == [version]
    assert not (base_weights / "weights.safetensors").exists()
    report = verify(ws, reg, name, version)  # the base's signed digest stays in the certificate
    assert report.ok, report.problems
    assert (
        "deleted by the purge after"
        in {n: d for n, _, d in report.checks}["certificate.base_model"]
    )
    with pytest.raises(RegistryError, match="1 was deleted by the purge after"):
        verify(ws, reg, name, "1")
    chain = trace(ws, reg, name, version)
    assert [e["version"] for e in chain] == [version, "1"] and "deleted" in chain[-1]
