"""The whole deletion-batch flow against real local services: a git + DVC workspace with a local
remote, a sqlite MLflow registry, and Prefect's test server."""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import urlparse

import pytest

from pipelines.audit import verify
from pipelines.batch import BatchError
from pipelines.flow import deletion_batch
from pipelines.intake import submit
from pipelines.registry import VersionRef
from pipelines.review import ReviewError, approve, reject
from pipelines.snapshot import read_split
from pipelines.store import RequestStore
from tests.conftest import make_workspace


def _artifact_dir(reg, name, version) -> Path:
    return Path(urlparse(reg.resolve(name, version).source).path)


def flip_first_sample_hash(manifest: Path) -> bytes:
    """Change one character of the first sample's sha256 in a stored forget manifest; returns
    the original bytes so the caller can put them back."""
    raw = manifest.read_bytes()
    i = raw.index(b'"sha256":"') + len(b'"sha256":"')
    manifest.write_bytes(raw[:i] + (b"0" if raw[i : i + 1] != b"0" else b"1") + raw[i + 1 :])
    return raw


def _ids(ws, n: int) -> list[str]:
    return read_split(ws, "HEAD", "train", pixels=False).ids[:n].tolist()


def _statuses(ws):
    with RequestStore(ws.requests_db) as s:
        return {r.id: (r.status, r.reason) for r in s.list()}


def test_class_batch_end_to_end_then_tamper_detection(tmp_path, prefect_server):
    ws = make_workspace(tmp_path)
    reg, name = ws.registry(), ws.settings.registry.model_name
    stored, created, n = submit(ws, {"kind": "class", "class_label": 4})
    assert created and n > 50

    outcome = deletion_batch(str(ws.root))
    assert outcome.status == "awaiting_approval", outcome.reason
    u, o = outcome.unlearned, outcome.original
    assert u["acc_dft"] <= 1.0 and u["acc_df"] <= 1.0 and u["mia_efficacy"] >= 95
    assert u["acc_drt"] >= o["acc_drt"] - 1.0
    version = outcome.model_version
    mv = reg.resolve(name, alias="candidate")
    assert (
        str(mv.version) == version and mv.tags["certificate_sha256"] == outcome.certificate_sha256
    )
    assert _statuses(ws)[stored.id][0] == "awaiting_approval"

    # The new DVC snapshot lacks every forgotten sample, and it was pushed to the local remote.
    before = read_split(ws, mv.tags["data.before_rev"], "train")
    after = read_split(ws, mv.tags["data.after_rev"], "train")
    assert (
        (before.y == 4).sum() == n and (after.y == 4).sum() == 0 and len(after) == len(before) - n
    )
    remote = ws.state / "dvc-remote" / "files" / "md5"
    md5 = mv.tags["data.dvc_md5"].removesuffix(".dir")
    assert (remote / md5[:2] / (md5[2:] + ".dir")).is_file()

    report = verify(ws, reg, name, version)
    assert report.ok, report.problems
    assert {c[0] for c in report.checks} >= {
        "certificate.sha256",
        "certificate.signature",
        "forget_manifest.dvc",
        "data.before",
        "data.after",
        "model.weights",
    }

    approve(ws, reg, name, version, "alice")
    assert str(reg.champion(name).version) == version and not reg.has_alias(name, "candidate")
    assert _statuses(ws)[stored.id][0] == "certified"
    with pytest.raises(ReviewError, match="already approved"):
        approve(ws, reg, name, version, "alice")
    history = (ws.root / "audit" / "alias_history.jsonl").read_text().splitlines()
    assert (
        json.loads(history[-1])["actor"] == "alice"
        and ws.git("status", "--porcelain", "audit") == ""
    )
    assert verify(ws, reg, name, version).ok  # approval record verifies too

    # One byte changed in the certificate: verify names the file and the changed field.
    art = _artifact_dir(reg, name, version)
    cert_path = art / "certificate.json"
    original = cert_path.read_bytes()
    cert_path.write_bytes(original.replace(b'"scenario":"class"', b'"scenario":"clasS"', 1))
    bad = verify(ws, reg, name, version)
    assert not bad.ok
    text = " ".join(bad.problems)
    assert (
        "certificate.sha256" in text
        and "batch.scenario" in text
        and "certificate.signature" in text
    )
    cert_path.write_bytes(original)

    # One byte changed in the forget manifest.
    man_path = art / "forget_manifest.json"
    man = flip_first_sample_hash(man_path)
    bad = verify(ws, reg, name, version)
    assert [p.split(":")[0] for p in bad.problems] == ["forget_manifest.artifact"]
    # Approval purged the erased samples, so no recomputed manifest can name the field.
    assert "cannot be named: the erased samples were purged" in bad.problems[0]
    man_path.write_bytes(man)
    assert verify(ws, reg, name, version).ok

    _a_tampered_tag_is_named(ws, reg, name, version)


def _a_tampered_tag_is_named(ws, reg, name: str, version: str) -> None:
    """A tag the pipeline reads (the snapshot a next batch builds on) edited in the store: the
    signed certificate says otherwise, and verify names the tag."""
    ref = VersionRef(name, version)
    signed = reg.resolve(name, version).tags["data.after_rev"]
    reg.set_tags(ref, {"data.after_rev": "0" * 40})
    bad = verify(ws, reg, name, version)
    assert [p.split(":")[0] for p in bad.problems] == ["version.tags"]
    assert "data.after_rev" in bad.problems[0]
    reg.set_tags(ref, {"data.after_rev": signed})
    assert verify(ws, reg, name, version).ok


def test_failed_gates_register_nothing_and_return_requests_to_pending(tmp_path, prefect_server):
    # A learning rate too small to change anything: forgetting gates must fail.
    ws = make_workspace(
        tmp_path,
        {
            "rfa": {
                "min_steps": 5,
                "class_unlearning": {
                    "target": "masked_nearest_class",
                    "lr": 1e-7,
                    "forget_epochs": 1,
                },
            }
        },
    )
    reg, name = ws.registry(), ws.settings.registry.model_name
    stored, _, _ = submit(ws, {"kind": "class", "class_label": 2})
    commits = ws.git("rev-list", "--count", "HEAD")
    outcome = deletion_batch(str(ws.root))
    assert outcome.status == "gates_failed" and "forget_train" in outcome.reason
    assert [str(v.version) for v in reg.versions(name)] == ["1"]
    status, reason = _statuses(ws)[stored.id]
    assert status == "pending" and "forget_train" in reason
    assert ws.git("rev-list", "--count", "HEAD") == commits  # no data snapshot for a failed batch
    import mlflow

    runs = mlflow.search_runs(
        experiment_names=[ws.settings.registry.experiment],
        filter_string="tags.status = 'gates_failed'",
    )
    assert len(runs) == 1
    # Its report says why, with the plots, on the failed run.
    report = Path(urlparse(runs.artifact_uri[0]).path) / "report"
    assert "FAIL |" in (report / "report.md").read_text() and (report / "report.html").is_file()
    assert (report / "figures" / "confidence.png").is_file()
    # The failed request waits out its backoff instead of going first again: the next batch
    # takes the request behind it, and nothing is left to run until the backoff ends.
    with RequestStore(ws.requests_db) as store:
        failed = store.get(stored.id)
        assert (
            failed.not_before > failed.deadline[:0] and "failure 1; retried after" in failed.reason
        )
        assert store.ready() == []
    behind, _, _ = submit(ws, {"kind": "samples", "sample_ids": _ids(ws, 5)})
    with RequestStore(ws.requests_db) as store:
        assert [r.id for r in store.ready()] == [behind.id]


def test_crashing_batch_loses_no_request_and_leaves_no_version(
    tmp_path, prefect_server, monkeypatch
):
    ws = make_workspace(tmp_path)
    reg, name = ws.registry(), ws.settings.registry.model_name
    stored, _, _ = submit(
        ws, {"kind": "samples", "sample_ids": list(read_split(ws, "HEAD", "train").ids[:30])}
    )
    monkeypatch.setenv("UNLEARN_KEY_DIR", str(tmp_path / "no-keys"))  # a machine without keys
    with pytest.raises(BatchError, match="no batch signing key"):
        deletion_batch(str(ws.root))
    status, reason = _statuses(ws)[stored.id]
    assert status == "pending" and "no batch signing key" in reason
    assert [str(v.version) for v in reg.versions(name)] == ["1"] and not reg.has_alias(
        name, "candidate"
    )


def test_rejection_returns_requests_and_unblocks_the_next_batch(tmp_path, prefect_server):
    ws = make_workspace(tmp_path)
    reg, name = ws.registry(), ws.settings.registry.model_name
    stored, _, _ = submit(ws, {"kind": "class", "class_label": 7})
    before = ws.git("rev-parse", "HEAD")
    first = deletion_batch(str(ws.root))
    assert first.status == "awaiting_approval", first.reason
    with pytest.raises(BatchError, match="awaits review"):
        deletion_batch(str(ws.root))
    assert _statuses(ws)[stored.id][0] == "awaiting_approval"
    reject(ws, reg, name, first.model_version, "bob", "wrong class")
    assert _statuses(ws)[stored.id] == ("pending", "rejected by bob: wrong class")
    # HEAD holds the champion's data again (not the rejected erasure), in a commit saying why.
    champion_rev = reg.champion(name).tags["data.rev"]
    for f in ("data/raw.dvc", "data/tombstones.json"):
        assert ws.git("show", f"HEAD:{f}") == ws.git("show", f"{champion_rev}:{f}")
    assert ws.git("log", "-1", "--format=%s").startswith(f"{first.batch_id}: rejected by bob")
    assert ws.git("status", "--porcelain", "--", "data") == ""
    assert ws.git("diff", before, "HEAD", "--", "data", "dvc.yaml", "dvc.lock") == ""
    assert (
        str(reg.champion(name).version) == "1"
        and reg.resolve(name, first.model_version).tags["status"] == "rejected"
    )
    with pytest.raises(ReviewError, match="was rejected"):
        approve(ws, reg, name, first.model_version, "bob")
    second = deletion_batch(str(ws.root))  # re-run from the champion's own snapshot
    assert second.status == "awaiting_approval", second.reason
    assert second.model_version != first.model_version


def test_a_version_built_on_an_older_champion_cannot_undo_a_certified_erasure(
    tmp_path, prefect_server
):
    """Two batches that both built on v1 (two runs at once, or a crash that left a version without
    its alias): approving the second after the first would serve a model that still knows what the
    first erased. Both orders are refused."""
    ws = make_workspace(tmp_path)
    reg, name = ws.registry(), ws.settings.registry.model_name
    submit(ws, {"kind": "class", "class_label": 4})
    first = deletion_batch(str(ws.root))
    assert first.status == "awaiting_approval", first.reason
    reg.drop_alias(name, "candidate")  # as if a second run had started before the first published
    v1 = read_split(ws, reg.champion(name).tags["data.rev"], "train", pixels=False)
    submit(ws, {"kind": "samples", "sample_ids": v1.ids[v1.y != 4][:30].tolist()})
    second = deletion_batch(str(ws.root))
    assert second.status == "awaiting_approval", second.reason
    assert (
        reg.resolve(name, first.model_version).tags["base_version"]
        == reg.resolve(name, second.model_version).tags["base_version"]
        == "1"
    )
    with pytest.raises(ReviewError, match="does not hold the candidate alias"):
        approve(ws, reg, name, first.model_version, "alice")
    approve(ws, reg, name, second.model_version, "alice")
    reg.set_alias(VersionRef(name, first.model_version), "candidate")  # moved back by hand
    with pytest.raises(
        ReviewError,
        match=f"built on version 1, but the champion is now version {second.model_version}",
    ):
        approve(ws, reg, name, first.model_version, "alice")
    assert str(reg.champion(name).version) == second.model_version


def test_a_poison_request_is_set_aside_and_the_rest_of_its_batch_is_certified(
    tmp_path, prefect_server
):
    """Both valid when submitted: a class request and a request for three images of that class.
    Once the class batch is approved, those images are gone; the second batch sets that request
    aside with the reason and certifies the other request it holds, instead of failing whole."""
    ws = make_workspace(tmp_path)
    reg, name = ws.registry(), ws.settings.registry.model_name
    train = read_split(ws, "HEAD", "train", pixels=False)
    fours, ones = train.ids[train.y == 4][:3].tolist(), train.ids[train.y == 1][:20].tolist()
    cls, _, _ = submit(ws, {"kind": "class", "class_label": 4})
    poison, _, _ = submit(ws, {"kind": "samples", "sample_ids": fours})
    good, _, _ = submit(ws, {"kind": "samples", "sample_ids": ones})
    first = deletion_batch(str(ws.root))
    assert first.status == "awaiting_approval" and first.scenario == "class", first.reason
    approve(ws, reg, name, first.model_version, "alice")
    second = deletion_batch(str(ws.root))
    assert second.status == "awaiting_approval", second.reason
    statuses = _statuses(ws)
    assert statuses[good.id][0] == "awaiting_approval"
    assert statuses[poison.id][0] == "set_aside"
    assert f"already erased by batch {first.batch_id}" in statuses[poison.id][1]
    cert = json.loads(
        (_artifact_dir(reg, name, second.model_version) / "certificate.json").read_text()
    )
    assert [r["id"] for r in cert["requests"]] == [good.id]
    assert cert["forget_manifest"]["count"] == 20
    assert verify(ws, reg, name, second.model_version).ok
