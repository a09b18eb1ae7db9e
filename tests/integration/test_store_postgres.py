"""The request store on PostgreSQL (Debian's server on 127.0.0.1): the same transitions as on
sqlite, one lease per model across processes, and a server that is down as one line."""

from __future__ import annotations

import subprocess
import sys
import time
from datetime import timedelta

import pytest
import sqlalchemy as sa

from benchmarks.services import create_database
from components.requests import parse_request
from pipelines.lease import LeaseHeld
from pipelines.store import RequestStore
from pipelines.store_engine import store_location
from pipelines.store_faults import StoreError
from pipelines.store_schema import LEASES, REQUESTS
from tests.integration.test_shared_stores import postgres  # noqa: F401 - a fixture
from tests.unit.test_store import check_large_batch

HOUR = timedelta(hours=1)


def _database(server: str, name: str) -> str:
    return create_database(server, name)


def test_requests_move_through_their_states_on_postgresql(postgres):  # noqa: F811
    url = _database(postgres, "states")
    with RequestStore(url) as s:
        r1, created = s.add(parse_request({"kind": "samples", "sample_ids": ["a", "b"]}), 2, 30)
        _, again = s.add(parse_request({"kind": "samples", "sample_ids": ["b", "a"]}), 2, 30)
        r2, _ = s.add(parse_request({"kind": "class", "class_label": 3}), 10, 30)
        assert created and not again
        s.claim([r1.id, r2.id], "batch-1")
        with pytest.raises(RuntimeError, match="no longer pending"):
            s.claim([r1.id], "batch-2")
        assert s.transition("batch-1", "pending", reason="gates failed: x") == 2
        s.escalate(r2.id, "three failed batches")
    with RequestStore(url) as s:  # durable across connections
        assert [h[1] for h in s.history(r1.id)] == ["pending", "processing", "pending"]
        assert s.get(r1.id).reason == "gates failed: x" and s.get(r2.id).status == "set_aside"
        with pytest.raises(KeyError):
            s.get("req-missing")


def test_a_large_batch_moves_whole_or_not_at_all_on_postgresql(postgres):  # noqa: F811
    check_large_batch(_database(postgres, "large"))


_TAKE = """
import sys
from datetime import timedelta
from pipelines.lease import LeaseHeld
from pipelines.store import RequestStore
with RequestStore(sys.argv[1]) as s:
    try:
        s.take_lease("m", sys.argv[2], timedelta(hours=1))
    except LeaseHeld as err:
        print("held:", err)
        sys.exit(3)
    print("took", flush=True)
    sys.stdin.read()  # alive and holding until the test has seen the other process try
"""


def _takers(url: str) -> list[subprocess.Popen]:
    take = [[sys.executable, "-c", _TAKE, url, f"b{i}"] for i in (1, 2)]
    pipes = {"stdin": subprocess.PIPE, "stdout": subprocess.PIPE, "stderr": subprocess.PIPE}
    return [subprocess.Popen(a, text=True, **pipes) for a in take]


def _outcome(procs: list[subprocess.Popen]) -> tuple[list[int], list[tuple[str, str]]]:
    """Sorted exit codes and outputs. A holder holds until its stdin closes, so the other tries
    while it is alive however slowly either starts (a fixed sleep let a loaded machine start the
    second after the first had gone, and then it rightly replaced a dead holder's lease). If both
    took it, neither ends, and after 60 s both are let go: exit codes [0, 0]."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and all(p.poll() is None for p in procs):
        time.sleep(0.1)
    outs = [p.communicate(input="", timeout=120) for p in procs]
    return sorted(p.returncode for p in procs), outs


def test_one_lease_per_model_across_processes_on_postgresql(postgres):  # noqa: F811
    url = _database(postgres, "leases")
    RequestStore(url).close()
    codes, outs = _outcome(_takers(url))
    assert codes == [0, 3], outs  # exactly one took it; the other was told who holds it
    assert any("one batch per model" in o for o, _ in outs)
    with RequestStore(url) as s:  # both processes are gone: the lease is stale and replaced
        assert s.take_lease("m", "b3", HOUR).batch_id in ("b1", "b2")
        with pytest.raises(LeaseHeld):
            s.take_lease("m", "b4", HOUR)


def _until_waiting(watch: sa.Connection, n: int) -> None:
    """Until `n` connections wait on a lock this test holds (60 s at most)."""
    watch = watch.execution_options(isolation_level="AUTOCOMMIT")  # a fresh view per query
    q = "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
    deadline = time.monotonic() + 60
    while watch.exec_driver_sql(q).scalar() < n and time.monotonic() < deadline:
        time.sleep(0.05)
    assert watch.exec_driver_sql(q).scalar() == n


def test_two_takers_queued_on_a_stale_lease_leave_one_holder(postgres):  # noqa: F811
    """Both find the dead holder's row and wait on its lock; the first replaces it. The second's
    next statement sees the first's new lease (PostgreSQL's READ COMMITTED): it must not delete
    it. Holding the row's lock here until both wait makes the interleaving certain."""
    url = _database(postgres, "stale")
    with RequestStore(url) as s:
        s.take_lease("m", "b0", HOUR)
    engine = sa.create_engine(store_location(url).url)
    with engine.connect() as holder, engine.connect() as watch:
        dead = {"owner": "gone-host:1:1", "expires_at": "2000-01-01T00:00+00:00"}
        holder.execute(sa.update(LEASES).values(**dead))
        holder.commit()  # a holder on another host, expired
        holder.execute(sa.select(LEASES).with_for_update())  # and its row locked by this test
        procs = _takers(url)
        _until_waiting(watch, 2)
        holder.rollback()
    engine.dispose()
    codes, outs = _outcome(procs)
    assert codes == [0, 3], outs


_ADD = """
import sys
from components.requests import parse_request
from pipelines.store import RequestStore
with RequestStore(sys.argv[1]) as s:
    r, created = s.add(parse_request({"kind": "samples", "sample_ids": ["a", "b"]}), 2, 30)
    print(r.id, created)
"""


def test_the_same_request_submitted_at_once_is_stored_once(postgres):  # noqa: F811
    """A client that retries can reach two intakes at once. The second's read cannot see the
    first's uncommitted row; its insert waits on the unique key and then meets it. Holding the
    first insert open until the second waits makes that interleaving certain: the second must
    answer 'already received' (created False), not a traceback."""
    url = _database(postgres, "twice")
    RequestStore(url).close()
    req = parse_request({"kind": "samples", "sample_ids": ["b", "a"]})
    row = dict(id="req-first", dedup_key=req.dedup_key(), kind=req.kind, n_samples=2,
               payload=req.model_dump_json(), received_at="2026-12-07T00:00:00+00:00",
               deadline="2027-01-06T00:00:00+00:00", status="pending", updated_at="")  # fmt: skip
    engine = sa.create_engine(store_location(url).url)
    with engine.connect() as first, engine.connect() as watch:
        first.execute(sa.insert(REQUESTS).values(**row))  # not committed yet
        second = subprocess.Popen([sys.executable, "-c", _ADD, url], text=True,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE)  # fmt: skip
        _until_waiting(watch, 1)
        first.commit()
    engine.dispose()
    out, err = second.communicate(timeout=120)
    assert (second.returncode, out.split()) == (0, ["req-first", "False"]), err[-600:]
    with RequestStore(url) as s:
        assert [r.id for r in s.list()] == ["req-first"]


_OPEN_AT = """
import sys, time
from pipelines.store import RequestStore
time.sleep(max(0.0, float(sys.argv[2]) - time.time()))  # every process opens at the same moment
RequestStore(sys.argv[1]).close()
"""


def test_workers_opening_a_brand_new_database_at_once_all_get_the_store(postgres):  # noqa: F811
    """Each opening creates the tables if missing: without one lock around that, two workers on
    a new database both CREATE them and one fails on PostgreSQL's catalogue."""
    for attempt in range(3):  # a race: three fresh databases, eight workers each
        url, at = _database(postgres, f"fresh{attempt}"), str(time.time() + 6)
        procs = [subprocess.Popen([sys.executable, "-c", _OPEN_AT, url, at], text=True,
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE)
                 for _ in range(8)]  # fmt: skip
        outs = [p.communicate(timeout=120) for p in procs]
        assert all(p.returncode == 0 for p in procs), [e[-600:] for _, e in outs if e]
        with RequestStore(url) as s:
            assert s.list() == []


@pytest.mark.parametrize(
    "url, words",
    [
        ("postgresql://postgres@127.0.0.1:1/requests", "127.0.0.1:1/requests cannot be reached"),
        ("postgresql://nobody:secret@127.0.0.1:PORT/requests", "nobody:***@127.0.0.1"),
    ],
)
def test_a_store_that_cannot_be_used_is_one_line_without_the_password(postgres, url, words):  # noqa: F811
    url = url.replace("PORT", postgres.rsplit(":", 1)[1])
    with pytest.raises(StoreError) as info:
        RequestStore(url)
    line = str(info.value)
    assert words in line and "secret" not in line and "\n" not in line
