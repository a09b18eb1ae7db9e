"""Identity and separation of duties: approvers from an allow-list, and whoever submitted a
batch's request or ran the batch cannot approve it; every refusal is one line and committed."""

from __future__ import annotations

import json

import pytest

from pipelines.audit import verify
from pipelines.flow import deletion_batch
from pipelines.intake import submit
from pipelines.registry import VersionRef
from pipelines.review import REFUSALS, ReviewError, approve
from tests.conftest import make_workspace


def test_self_approval_and_unlisted_approvers_are_refused_and_recorded(
    tmp_path, prefect_server, monkeypatch
):
    ws = make_workspace(tmp_path, {"review": {"approvers": ["erin", "carol", "dave"]}})
    reg, name = ws.registry(), ws.settings.registry.model_name
    monkeypatch.setenv("UNLEARN_USER", "carol")
    submit(ws, {"kind": "class", "class_label": 5})
    monkeypatch.setenv("UNLEARN_USER", "dave")
    outcome = deletion_batch(str(ws.root))
    assert outcome.status == "awaiting_approval", outcome.reason
    version = outcome.model_version
    mv = reg.resolve(name, version)
    assert mv.tags["batch.ran_by"] == "dave"
    cert = json.loads((ws.root / "audit" / "certificates" / name / f"v{version}.json").read_text())
    assert cert["batch"]["ran_by"] == "dave"
    assert {r["submitted_by"] for r in cert["requests"]} == {"carol"}

    refusals = []
    for who, why in (
        ("carol", "carol submitted a request of this batch"),
        ("dave", "dave ran this batch"),
        ("frank", "frank is not an approver (review.approvers in params.yaml)"),
    ):
        with pytest.raises(ReviewError) as err:
            approve(ws, reg, name, version, who)
        assert str(err.value) == f"cannot approve {name}/{version}: {why}"
        assert "\n" not in str(err.value)
        refusals.append(who)
    # The reviewer defaults to whoami(): here UNLEARN_USER, still the batch's runner.
    with pytest.raises(ReviewError, match="dave ran this batch"):
        approve(ws, reg, name, version, None)
    records = [json.loads(line) for line in (ws.root / REFUSALS).read_text().splitlines()]
    assert [r["reviewer"] for r in records] == [*refusals, "dave"]
    assert all(r["action"] == "approve" and r["version"] == version for r in records)
    assert ws.git("status", "--porcelain", "audit") == ""  # each refusal committed
    assert reg.resolve(name, version).tags["status"] == "awaiting_approval"

    # The runner is signed: editing the tag to pass as someone else is caught by verify.
    reg.set_tags(VersionRef(name, version), {"batch.ran_by": "nobody"})
    assert "batch.ran_by" in " ".join(verify(ws, reg, name, version).problems)
    with pytest.raises(ReviewError, match="certificate: version.tags"):
        approve(ws, reg, name, version, "erin")
    reg.set_tags(VersionRef(name, version), {"batch.ran_by": "dave"})

    approve(ws, reg, name, version, "erin")
    assert reg.resolve(name, version).tags["approved_by"] == "erin"


def test_an_authenticated_mlflow_user_cannot_approve_under_another_name(monkeypatch, tmp_path):
    from pipelines.review import _validate_reviewer

    monkeypatch.setenv("MLFLOW_TRACKING_USERNAME", "alice")
    assert _validate_reviewer(None) == "alice"
    with pytest.raises(ReviewError, match="--reviewer bob, but the MLflow server authenticates"):
        _validate_reviewer("bob")
