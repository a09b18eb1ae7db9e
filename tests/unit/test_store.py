import pytest

from components.requests import parse_request
from pipelines.store import RequestStore


def test_add_dedup_claim_transition_and_history(tmp_path):
    path = tmp_path / "r.db"
    with RequestStore(path) as s:
        r1, created = s.add(parse_request({"kind": "samples", "sample_ids": ["a", "b"]}), 2, 30)
        again, created2 = s.add(parse_request({"kind": "samples", "sample_ids": ["b", "a"]}), 2, 30)
        assert created and not created2 and again.id == r1.id
        r2, _ = s.add(parse_request({"kind": "class", "class_label": 3}), 10, 30)
        s.claim([r1.id, r2.id], "batch-1")
        assert {r.status for r in s.list()} == {"processing"}
        with pytest.raises(RuntimeError, match="no longer pending"):
            s.claim([r1.id], "batch-2")
        assert s.transition("batch-1", "pending", reason="gates failed: x") == 2
    with RequestStore(path) as s:  # durable across connections
        got = s.get(r1.id)
        assert got.status == "pending" and got.reason == "gates failed: x" and got.batch_id == ""
        assert [h[1] for h in s.history(r1.id)] == ["pending", "processing", "pending"]
        assert got.deadline > got.received_at


def test_claim_is_all_or_nothing(tmp_path):
    with RequestStore(tmp_path / "r.db") as s:
        r1, _ = s.add(parse_request({"kind": "class", "class_label": 1}), 5, 30)
        with pytest.raises(RuntimeError):
            s.claim([r1.id, "req-missing"], "b")
        assert s.get(r1.id).status == "pending"
