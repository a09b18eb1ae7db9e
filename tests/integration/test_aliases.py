"""Decisions on record: a rejection is a signed record like an approval, the run's status follows
the version's, and `unlearn audit aliases` catches `champion` moved by hand in MLflow."""

from __future__ import annotations

import json

from pipelines.audit import verify
from pipelines.cli import main
from pipelines.flow import deletion_batch
from pipelines.intake import submit
from pipelines.keys import check
from pipelines.registry import VersionRef
from pipelines.review import approve, reject
from tests.conftest import make_workspace
from tests.integration.test_integration import _artifact_dir


def _aliases(capsys, ws) -> tuple[int, list[dict]]:
    code = main(["-w", str(ws.root), "audit", "aliases", "digits-cnn", "--json"])
    return code, json.loads(capsys.readouterr().out)


def _run_status(reg, name, version) -> str:
    return reg.client.get_run(reg.resolve(name, version).run_id).data.tags["status"]


def test_decisions_are_signed_runs_follow_and_a_hand_moved_alias_is_caught(
    tmp_path, prefect_server, capsys
):
    ws = make_workspace(tmp_path)
    reg, name = ws.registry(), ws.settings.registry.model_name
    code, findings = _aliases(capsys, ws)
    assert code == 0 and [(f["alias"], f["live"], f["ok"]) for f in findings] == [
        ("champion", "1", True)
    ]
    submit(ws, {"kind": "class", "class_label": 8})
    v2 = deletion_batch(str(ws.root)).model_version
    assert _run_status(reg, name, v2) == "awaiting_approval"
    code, findings = _aliases(capsys, ws)
    assert code == 0 and {f["alias"]: f["live"] for f in findings} == {
        "candidate": v2,
        "champion": "1",
    }

    code = main(["-w", str(ws.root), "review", "list", name, "--json"])
    waiting = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert code == 0 and [(w["version"], w["gates_passed"]) for w in waiting] == [(v2, True)]
    assert main(["-w", str(ws.root), "review", "show", name, v2]) == 0
    assert "gate policy recorded" in capsys.readouterr().out

    reject(ws, reg, name, v2, "bob", "wrong class")
    assert main(["-w", str(ws.root), "review", "list", name, "--json"]) == 0
    assert capsys.readouterr().out == ""
    assert _run_status(reg, name, v2) == "rejected"
    d = _artifact_dir(reg, name, v2)
    record = json.loads((d / "rejection.json").read_text())
    assert record["reviewer"] == "bob" and record["reason"] == "wrong class"
    signed, how = check(
        ws, (d / "rejection.json").read_bytes(), (d / "rejection.sig").read_text(), "review"
    )
    assert signed and "review key" in how

    v3 = deletion_batch(str(ws.root)).model_version
    approve(ws, reg, name, v3, "alice")
    assert _run_status(reg, name, v3) == "approved"
    assert _aliases(capsys, ws)[0] == 0

    # A threshold lowered in the workspace params: the next certificate signs the new policy and
    # verify names the change against the version it was built on.
    params = ws.root / "params.yaml"
    params.write_text(params.read_text().replace("class_mia_min: 95.0", "class_mia_min: 0.0"))
    submit(ws, {"kind": "class", "class_label": 9})
    v4 = deletion_batch(str(ws.root)).model_version
    policy = {n: d for n, _, d in verify(ws, reg, name, v4).checks}["policy"]
    assert policy == f"CHANGED since {name}/{v3}: gates.class_mia_min 95.0 -> 0.0"
    assert {n: d for n, _, d in verify(ws, reg, name, v3).checks}["policy"].startswith("recorded")
    reject(ws, reg, name, v4, "bob", "policy change not agreed")

    reg.set_alias(VersionRef(name, "1"), "champion")  # by hand, as in the MLflow UI
    code, findings = _aliases(capsys, ws)
    (champion,) = [f for f in findings if f["alias"] == "champion"]
    assert code == 1 and champion["live"] == "1" and champion["expected"] == v3
    assert "moved outside unlearn" in champion["detail"]
