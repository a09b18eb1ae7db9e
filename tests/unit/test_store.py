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


def test_one_batch_lease_per_model_and_a_dead_or_expired_holder_is_replaced(tmp_path):
    import subprocess
    import sys
    from datetime import timedelta

    from pipelines.lease import LeaseHeld, process_identity
    from pipelines.store import RequestStore

    hour = timedelta(hours=1)
    with RequestStore(tmp_path / "r.db") as store:
        assert store.take_lease("m", "b1", hour) is None  # free
        with pytest.raises(LeaseHeld, match="batch b1 of m .* is running; one batch per model"):
            store.take_lease("m", "b2", hour)  # this very process holds it, alive
        assert store.take_lease("other-model", "b3", hour) is None  # per model
        # A review decision holds the lease like a batch; the refusal names it for what it is.
        assert store.take_lease("decided", "review-approve-2-ab12cd", hour) is None
        with pytest.raises(LeaseHeld, match="^review decision review-approve-2-ab12cd of decided "):
            store.take_lease("decided", "b5", hour)
        store.touch_lease("m", "b1", "unlearn", hour)
        assert store.lease("m").stage == "unlearn"
        # The holder's process is gone (kill -9 leaves exactly this): the lease is replaced and
        # handed back, so its batch can be recovered.
        child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
        dead = process_identity(child.pid)
        child.kill()
        child.wait()
        store._db.exec_driver_sql("UPDATE leases SET owner = ? WHERE model = 'm'", (dead,))
        replaced = store.take_lease("m", "b4", hour)
        assert replaced.batch_id == "b1" and "is gone" in replaced.stale()
        # A lease that ran out is replaced too, whoever held it (another host cannot be asked).
        store.drop_lease("m", "b4")
        store.take_lease("m", "b5", timedelta(seconds=-1))
        assert "expired" in store.take_lease("m", "b6", hour).stale()
        # Another host's live-looking lease is respected until it expires.
        store._db.exec_driver_sql("UPDATE leases SET owner = 'elsewhere:1:1' WHERE model = 'm'")
        with pytest.raises(LeaseHeld):
            store.take_lease("m", "b7", hour)


def test_a_batch_whose_lease_was_taken_over_is_told_when_it_next_renews_it(tmp_path):
    from datetime import timedelta

    from pipelines.lease import LeaseLost
    from pipelines.store import RequestStore

    hour = timedelta(hours=1)
    with RequestStore(tmp_path / "r.db") as store:
        store.take_lease("m", "b1", hour)
        store.touch_lease("m", "b1", "unlearn", hour)
        store.touch_lease("m", "b1", None, 2 * hour)  # a renewal keeps the stage
        assert store.lease("m").stage == "unlearn"
        # Another run found the lease run out and took the model over.
        store._db.exec_driver_sql("UPDATE leases SET batch_id = 'b2' WHERE model = 'm'")
        with pytest.raises(LeaseLost, match="batch b1 lost the lease of m .batch b2 of m .*holds"):
            store.touch_lease("m", "b1", "evaluate", hour)
        store.drop_lease("m", "b1")  # letting go of a lost lease leaves the taker's alone
        assert store.lease("m").batch_id == "b2" and store.lease("m").stage == "unlearn"
        store.drop_lease("m", "b2")
        with pytest.raises(LeaseLost, match="nobody holds it now"):
            store.touch_lease("m", "b2", None, hour)
        with pytest.raises(LeaseLost, match="^review decision review-reject-2-ab12cd lost the"):
            store.touch_lease("m", "review-reject-2-ab12cd", None, hour)


def test_the_keeper_renews_a_lease_that_would_run_out_and_reports_a_takeover(tmp_path):
    """A stage longer than the lease: without renewal the next run may take the model over."""
    import time
    from datetime import timedelta

    from pipelines.lease import LeaseHeld
    from pipelines.lease_keeper import kept
    from pipelines.store import RequestStore

    ttl, every = timedelta(seconds=3), timedelta(seconds=0.5)
    db = tmp_path / "r.db"
    with RequestStore(db) as store:
        store.take_lease("m", "b1", ttl)
        with kept(db, "m", "b1", ttl, every) as keeper:
            time.sleep(4.5)  # past the lease as taken
            with pytest.raises(LeaseHeld):
                store.take_lease("m", "b2", ttl)
            assert keeper.renewals >= 3 and not keeper.lost
            store._db.exec_driver_sql("UPDATE leases SET batch_id = 'b3' WHERE model = 'm'")
            deadline = time.monotonic() + 30
            while not keeper.lost and time.monotonic() < deadline:
                time.sleep(0.1)
            assert "batch b1 lost the lease of m" in keeper.lost
        store.drop_lease("m", "b3")
        store.take_lease("m", "b4", ttl)
        time.sleep(4.5)  # nobody renews it: it runs out, and the next run replaces it
        assert "expired" in store.take_lease("m", "b5", ttl).stale()


def test_a_store_made_before_set_aside_existed_is_migrated_with_its_rows(tmp_path):
    import sqlite3

    path = tmp_path / "old.db"
    old = sqlite3.connect(path)
    old.executescript(
        "CREATE TABLE requests (id TEXT PRIMARY KEY, dedup_key TEXT NOT NULL UNIQUE, kind TEXT "
        "NOT NULL, payload TEXT NOT NULL, n_samples INTEGER NOT NULL, received_at TEXT NOT NULL, "
        "deadline TEXT NOT NULL, status TEXT NOT NULL CHECK (status IN ('pending','processing',"
        "'awaiting_approval','certified')), reason TEXT NOT NULL DEFAULT '', batch_id TEXT NOT "
        "NULL DEFAULT '', model_version TEXT NOT NULL DEFAULT '', updated_at TEXT NOT NULL);"
        "INSERT INTO requests VALUES ('req-1', 'k', 'class', "
        '\'{"kind": "class", "class_label": 3}\', 5, "2026-11-01", "2026-12-01", "processing", '
        "'', 'b1', '', '2026-11-01');"
    )
    old.commit()
    old.close()
    with RequestStore(path) as s:
        assert s.get("req-1").status == "processing"
        s.set_aside("req-1", "class 3 was already forgotten by an earlier batch")
        got = s.get("req-1")
        assert got.status == "set_aside" and got.batch_id == "" and "already" in got.reason
        with pytest.raises(RuntimeError, match="not being processed"):
            s.set_aside("req-1", "again")


def test_add_many_dedups_within_and_across_calls_and_is_all_or_nothing(tmp_path):
    a = parse_request({"kind": "samples", "sample_ids": ["a"]})
    b = parse_request({"kind": "samples", "sample_ids": ["b"]})
    with RequestStore(tmp_path / "r.db") as s:
        first = s.add_many([(a, 1, "t-1"), (b, 1, None), (a, 1, None)], 30)
        assert [c for _, c in first] == [True, True, False] and first[2][0] == "t-1"
        again = s.add_many([(a, 1, "t-1"), (b, 1, "t-9")], 30)  # same targets: the stored ones
        assert again == [("t-1", False), (first[1][0], False)]
        c = parse_request({"kind": "samples", "sample_ids": ["c"]})
        with pytest.raises(ValueError, match="request id 't-1' names a different request"):
            s.add_many([(c, 1, None), (c, 1, "t-1")], 30)
        assert len(s.list()) == 2  # c was not stored: all or none
        assert [h[2] for h in s.history("t-1")] == ["received"]


def test_a_batch_larger_than_one_statement_moves_whole_or_not_at_all(tmp_path):
    check_large_batch(tmp_path / "r.db")


def check_large_batch(where) -> None:
    """claim / transition work in chunks of 500 ids: a request that cannot move, wherever it
    sits, keeps every other one where it was, and a whole batch gets one event per request.
    Also run on PostgreSQL (tests/integration/test_store_postgres.py)."""
    reqs = [(parse_request({"kind": "samples", "sample_ids": [f"s{i}"]}), 1, None)
            for i in range(1203)]  # fmt: skip
    with RequestStore(where) as s:
        ids = [rid for rid, _ in s.add_many(reqs, 30)]
        s.cancel(ids[1100], "withdrawn")
        with pytest.raises(RuntimeError, match=f"request {ids[1100]} is no longer pending"):
            s.claim(ids, "b1")
        with pytest.raises(RuntimeError, match=f"request {ids[7]} is no longer pending"):
            s.claim([*ids[:1000], ids[7]], "b1")  # named twice: the second cannot move
        assert len(s.list("pending")) == 1202  # nothing moved
        s.claim([rid for rid in ids if rid != ids[1100]], "b1")
        assert s.transition("b1", "awaiting_approval", model_version="4") == 1202
        rejected = s.transition("b1", "pending", "rejected: x", from_status=("awaiting_approval",))
        assert rejected == 1202
        back = s.get(ids[1202])
        assert (back.status, back.batch_id, back.reason, back.model_version) == (
            "pending", "", "rejected: x", "4")  # fmt: skip
        assert [h[1:] for h in s.history(ids[600])] == [
            ("pending", "received"), ("processing", "claimed by b1"),
            ("awaiting_approval", "b1 4"), ("pending", "rejected: x")]  # fmt: skip
