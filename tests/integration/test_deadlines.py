"""Deadlines and failures as a platform meets them: a scheduled run waits for a fuller batch
unless a deadline is near; a request that keeps failing its gates is escalated to a person, who
retries, extends (with a reason, within the legal bound) or cancels it."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from pipelines.flow import deletion_batch
from pipelines.intake import submit
from pipelines.store import RequestStore
from tests.conftest import make_workspace
from tests.integration.test_cli import _one_line_error, run

# Gates that cannot pass (a learning rate too small to move anything), retried at once.
FAILING = {
    "rfa": {
        "min_steps": 5,
        "class_unlearning": {"target": "masked_nearest_class", "lr": 1e-7, "forget_epochs": 1},
    },
    "requests": {"retry_backoff_minutes": 0.0, "escalate_after_failures": 2},
}


def test_a_scheduled_run_waits_for_more_requests_unless_a_deadline_is_near(
    tmp_path, prefect_server
):
    ws = make_workspace(tmp_path, {"schedule": {"min_requests": 3, "deadline_margin_days": 3.0}})
    stored, _, _ = submit(ws, {"kind": "class", "class_label": 5})
    waiting = deletion_batch(str(ws.root), scheduled=True)
    assert waiting.status == "waiting" and "1 of 3 requests ready" in waiting.reason
    with RequestStore(ws.requests_db) as store:
        assert store.get(stored.id).status == "pending"
        soon = (datetime.now(UTC) + timedelta(days=2)).replace(microsecond=0).isoformat()
        sql = "UPDATE requests SET deadline = ? WHERE id = ?"
        store._db.exec_driver_sql(sql, (soon, stored.id))
    early = deletion_batch(str(ws.root), scheduled=True)  # due within the margin: runs now
    assert early.status == "awaiting_approval", early.reason
    # The Prefect UI showed its stages as a progress artifact of the flow run, now complete.
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        mine = [a for a in client.read_artifacts() if early.batch_id in (a.description or "")]
    bars = [(a.type, a.data) for a in mine if a.type == "progress"]
    assert bars == [("progress", 100.0)]
    assert sorted(a.type for a in mine) == ["progress", "table"]  # and the report's gate table


def test_repeated_failures_escalate_and_a_person_retries_or_extends(
    tmp_path, prefect_server, capsys
):
    ws = make_workspace(tmp_path, FAILING)
    stored, _, _ = submit(ws, {"kind": "class", "class_label": 2})
    first = deletion_batch(str(ws.root))
    assert first.status == "gates_failed" and first.escalated == []
    second = deletion_batch(str(ws.root))
    assert second.status == "gates_failed" and second.escalated == [stored.id]
    with RequestStore(ws.requests_db) as store:
        r = store.get(stored.id)
        assert r.status == "set_aside" and r.reason.startswith("escalated after 2 failed batches")
        assert store.ready() == []  # no batch takes it until a person decides
    assert deletion_batch(str(ws.root)).status == "nothing_pending"

    root = str(ws.root)
    code, _, err = run(
        capsys, "-w", root, "request", "extend", stored.id, "--by", "30d", "--reason", "x"
    )
    assert code == 0, err
    code, _, err = run(
        capsys, "-w", root, "request", "extend", stored.id, "--by", "31d", "--reason", "more"
    )
    assert code == 2
    _one_line_error(err, "at the latest (60 days past the first one")
    code, _, err = run(capsys, "-w", root, "request", "retry", stored.id, "--reason", "new params")
    assert code == 0, err
    with RequestStore(ws.requests_db) as store:
        r = store.get(stored.id)
        first_due = datetime.fromisoformat(r.received_at) + timedelta(days=30)
        assert r.status == "pending" and r.not_before == ""
        assert datetime.fromisoformat(r.deadline) == first_due + timedelta(days=30)
        notes = [note for _, _, note in store.history(stored.id)]
        assert any(n.startswith("deadline extended to") and n.endswith(": x") for n in notes)
        assert "retry: new params" in notes
        assert [x.id for x in store.ready()] == [stored.id]
    code, _, err = run(capsys, "-w", root, "request", "retry", stored.id, "--reason", "again")
    assert code == 2
    _one_line_error(err, "is not set_aside")
