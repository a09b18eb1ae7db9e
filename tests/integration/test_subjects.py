"""Reverse lineage by subject on a workspace with three batches, and subject ids kept in clear
nowhere but the data owner's mapping (MLflow store, request store, audit files, git history)."""

from __future__ import annotations

import json

import pytest

from components.requests import RequestError
from pipelines.cli import main
from pipelines.flow import deletion_batch
from pipelines.intake import submit
from pipelines.review import approve
from tests.conftest import make_workspace

ERASED, PENDING = "subject-0003", "subject-0010"
CH, CA = ["champion"], ["candidate"]


def _batch(ws, raw, approve_as: str | None = "alice") -> str:
    submit(ws, raw)
    outcome = deletion_batch(str(ws.root))
    assert outcome.status == "awaiting_approval", outcome.reason
    if approve_as:
        approve(ws, ws.registry(), ws.settings.registry.model_name, outcome.model_version, "alice")
    return outcome.model_version


def _query(capsys, ws, *args) -> dict:
    capsys.readouterr()
    assert main(["-w", str(ws.root), "audit", "subject", *args, "--json"]) == 0
    doc = json.loads(capsys.readouterr().out)
    return {v["version"]: (v["held"], v["erased_by"], v["aliases"]) for v in doc["versions"]}


def test_subject_query_after_three_batches_and_no_clear_id_at_rest(
    tmp_path, prefect_server, capsys
):
    ws = make_workspace(tmp_path)
    mapping = json.loads((ws.root / "data" / "subjects.json").read_text())
    samples = sorted({*mapping["subject-0020"], *mapping["subject-0021"]})  # the 2nd batch's
    sample = samples[0]
    v2 = _batch(ws, {"kind": "subject", "subject_id": ERASED})
    v3 = _batch(ws, {"kind": "samples", "sample_ids": samples})
    v4 = _batch(ws, {"kind": "subject", "subject_id": PENDING}, approve_as=None)
    assert (v2, v3, v4) == ("2", "3", "4")

    assert _query(capsys, ws, ERASED) == {
        "1": (4, "2", []), "2": (0, "", []), "3": (0, "", CH), "4": (0, "", CA)
    }  # fmt: skip
    assert _query(capsys, ws, PENDING) == {
        "1": (4, "", []), "2": (4, "", []), "3": (4, "", CH), "4": (0, "", CA)
    }  # fmt: skip
    assert _query(capsys, ws, "--sample", sample) == {
        "1": (1, "3", []), "2": (1, "3", []), "3": (0, "", CH), "4": (0, "", CA)
    }  # fmt: skip

    # The erased subject left the mapping; its tombstone is a keyed hash; a resubmission is told.
    assert ERASED not in json.loads((ws.root / "data" / "subjects.json").read_text())
    tomb = json.loads((ws.root / "data" / "tombstones.json").read_text())["subjects"]
    assert len(tomb) == 2 and ERASED not in json.dumps(tomb)  # both subject batches (HEAD: v4)
    with pytest.raises(RequestError, match=f"subject '{ERASED}' was already erased by batch-"):
        submit(ws, {"kind": "subject", "subject_id": ERASED})
    _no_clear_id_at_rest(ws, ERASED)
    _no_clear_id_at_rest(ws, PENDING)


def _no_clear_id_at_rest(ws, subject: str) -> None:
    needle = subject.encode()
    stores = [ws.root / "mlflow.db", *ws.requests_db.parent.glob(ws.requests_db.name + "*")]
    files = [*stores, *(ws.root / "mlartifacts").rglob("*"), *(ws.root / "audit").rglob("*")]
    found = [str(p) for p in files if p.is_file() and needle in p.read_bytes()]
    assert found == [], found
    # Git: every commit's message and every file's history except the data owner's mapping.
    log = ws.git("log", "-p", "--all", "--format=%B", "--", ".", ":(exclude)data/subjects.json")
    assert subject not in log
