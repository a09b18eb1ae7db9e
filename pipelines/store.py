"""Durable request store (sqlite in WAL mode, or PostgreSQL; one transaction per state change).

Statuses: pending -> processing -> awaiting_approval -> certified, and back to pending (with a
reason) when a batch fails its gates, crashes, or its model version is rejected. A request that
can no longer be resolved against the pinned snapshot (its samples were erased by an earlier
batch, its subject is unknown) is `set_aside` with the reason, so the rest of its batch proceeds.
Every change is also appended to `events`, so the history of a request is never overwritten.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import (
    ColumnElement,
    CursorResult,
    Executable,
    Row,
    and_,
    delete,
    insert,
    select,
    update,
)
from sqlalchemy.exc import IntegrityError

from components.requests import ForgetRequest
from pipelines.lease import Lease, LeaseHeld, LeaseLost, holder_kind, process_identity
from pipelines.store_engine import connect, store_location, transaction
from pipelines.store_faults import guarded
from pipelines.store_schema import EVENTS, LEASES, META, REQUESTS, STATUSES, migrate_sqlite


def _held(lease: Lease) -> LeaseHeld:
    return LeaseHeld(f"{lease.describe()} is running; one batch per model at a time")


def _chunks(values: list[str], size: int = 500) -> Iterator[list[str]]:
    """Bounded IN lists: sqlite builds before 3.32 allow 999 bound parameters per statement."""
    for i in range(0, len(values), size):
        yield values[i : i + size]


def _now() -> datetime:
    return datetime.now(UTC).replace(microsecond=0)


@dataclass(frozen=True)
class StoredRequest:
    id: str
    kind: str
    request: ForgetRequest
    n_samples: int
    received_at: str
    deadline: str
    status: str
    reason: str
    batch_id: str
    model_version: str
    not_before: str = ""  # deferred: no batch takes it before this time
    submitted_by: str = ""  # who submitted it (pipelines/identity.py): not its approver

    @property
    def scenario(self) -> str:
        return self.request.scenario

    @property
    def open(self) -> bool:
        """Still to be erased and certified (set-aside requests are closed until resubmitted)."""
        return self.status in ("pending", "processing", "awaiting_approval")


class RequestStore:
    """The request store at `where`: an sqlite file (Path) or a `postgresql://` URL."""

    def __init__(self, where: str | Path) -> None:
        self.where = store_location(where)
        with guarded(self.where):
            if self.where.file is not None:
                self.where.file.parent.mkdir(parents=True, exist_ok=True)
            self._engine, self._db = connect(self.where, META)
            if self.where.sqlite:
                migrate_sqlite(self._db)

    def close(self) -> None:
        self._db.close()
        self._engine.dispose()

    def __enter__(self) -> RequestStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _run(self, stmt: Executable) -> CursorResult:
        with guarded(self.where):
            return self._db.execute(stmt)

    @staticmethod
    def _row(r: Row) -> StoredRequest:
        return StoredRequest(r[0], r[1], ForgetRequest.model_validate_json(r[2]), *r[3:])

    _COLS = tuple(
        REQUESTS.c[n]
        for n in ("id", "kind", "payload", "n_samples", "received_at", "deadline", "status",
                  "reason", "batch_id", "model_version", "not_before", "submitted_by")
    )  # fmt: skip

    def add(
        self, req: ForgetRequest, n_samples: int, deadline_days: int, submitted_by: str = ""
    ) -> tuple[StoredRequest, bool]:
        """Store a validated request as pending. Returns (request, created); a duplicate of an
        existing request returns that one with created=False."""
        ((rid, created),) = self.add_many([(req, n_samples, None)], deadline_days, submitted_by)
        return self.get(rid), created

    def add_many(
        self,
        items: list[tuple[ForgetRequest, int, str | None]],
        deadline_days: int,
        submitted_by: str = "",
    ) -> list[tuple[str, bool]]:
        """Store validated requests (request, samples it erases, the client's own id or None) in
        one transaction: all of them or none. A request the store holds already (same target, or
        the same client id for the same target) is returned with created=False; a client id that
        names a different request is a ValueError. Returns (id, created) per item.

        On sqlite BEGIN IMMEDIATE serialises submitters. PostgreSQL's reads do not wait for
        another transaction's uncommitted insert: two intakes given the same request at once (a
        client that retries) both find it new, and the second's INSERT meets the unique key once
        the first commits. One more read then finds the first's row: a known request."""
        try:
            return self._add_many(items, deadline_days, submitted_by)
        except IntegrityError:
            return self._add_many(items, deadline_days, submitted_by)

    def _add_many(
        self,
        items: list[tuple[ForgetRequest, int, str | None]],
        deadline_days: int,
        submitted_by: str,
    ) -> list[tuple[str, bool]]:
        now = _now().isoformat()
        deadline = (_now() + timedelta(days=deadline_days)).isoformat()
        keys = [req.dedup_key() for req, _, _ in items]
        out, rows, events = [], [], []
        with self._tx():
            # Two reads for the whole batch (keys and client ids the store holds), one insert per
            # table: 10,000 requests in one statement each, not 20,000 round trips.
            by_key = self._known(REQUESTS.c.dedup_key, keys)
            by_id = self._known(REQUESTS.c.id, [c for *_, c in items if c])
            for (req, n, client_id), key in zip(items, keys, strict=True):
                if client_id and client_id in by_id:
                    if by_id[client_id] != key:
                        raise ValueError(f"request id {client_id!r} names a different request")
                    out.append((client_id, False))
                    continue
                if key in by_key:
                    out.append((by_key[key], False))
                    continue
                rid = client_id or f"req-{uuid.uuid4().hex[:12]}"
                by_key[key], by_id[rid] = rid, key
                rows.append(dict(
                    id=rid, dedup_key=key, kind=req.kind, payload=req.model_dump_json(),
                    n_samples=n, received_at=now, deadline=deadline, status="pending",
                    updated_at=now, submitted_by=submitted_by,
                ))  # fmt: skip
                events.append(dict(request_id=rid, at=now, status="pending", note="received"))
                out.append((rid, True))
            if rows:
                self._db.execute(insert(REQUESTS), rows)
                self._db.execute(insert(EVENTS), events)
        return out

    def _known(self, column: ColumnElement, values: list[str]) -> dict[str, str]:
        """For the values of `column` the store holds: value -> the other of (id, dedup_key)."""
        r, found = REQUESTS.c, {}
        other = r.id if column is r.dedup_key else r.dedup_key
        for chunk in _chunks(values):
            q = select(column, other).where(column.in_(chunk))
            for value, other_value in self._db.execute(q):  # dict(result) reads it as a mapping
                found[value] = other_value
        return found

    def get(self, rid: str) -> StoredRequest:
        row = self._run(select(*self._COLS).where(REQUESTS.c.id == rid)).first()
        if row is None:
            raise KeyError(f"no request {rid!r}")
        return self._row(row)

    def list(self, status: str | None = None) -> list[StoredRequest]:
        q = select(*self._COLS).order_by(REQUESTS.c.received_at, REQUESTS.c.id)
        if status:
            q = q.where(REQUESTS.c.status == status)
        return [self._row(r) for r in self._run(q)]

    def by_batch(self, batch_id: str) -> list[StoredRequest]:
        q = select(*self._COLS).where(REQUESTS.c.batch_id == batch_id).order_by(REQUESTS.c.id)
        return [self._row(r) for r in self._run(q)]

    def history(self, rid: str) -> list[tuple[str, str, str]]:
        e = EVENTS.c
        q = select(e.at, e.status, e.note).where(e.request_id == rid).order_by(e.seq)
        return [tuple(r) for r in self._run(q)]

    def _update(self, rid: str, where: ColumnElement, **values: str) -> int:
        """UPDATE one request if `where` holds; how many rows changed (0 or 1)."""
        stmt = update(REQUESTS).where(REQUESTS.c.id == rid, where)
        return self._db.execute(stmt.values(updated_at=_now().isoformat(), **values)).rowcount

    def claim(self, ids: list[str], batch_id: str) -> None:
        """pending -> processing, atomically: all of them or none. One read, one UPDATE and one
        INSERT per 500 ids, not two statements per request (benchmarks/notes/intake.md)."""
        r, now = REQUESTS.c, _now().isoformat()
        with self._tx():
            status = {}
            for chunk in _chunks(ids):  # locked until COMMIT (PostgreSQL; sqlite: IMMEDIATE)
                q = select(r.id, r.status).where(r.id.in_(chunk)).with_for_update()
                status.update(self._db.execute(q).all())
            seen: set[str] = set()
            for rid in ids:  # the first one that cannot move, in the caller's order
                if status.get(rid) != "pending" or rid in seen:
                    raise RuntimeError(f"request {rid} is no longer pending")
                seen.add(rid)
            values = dict(status="processing", batch_id=batch_id, reason="", updated_at=now)
            self._move_all(ids, values, "processing", f"claimed by {batch_id}")

    def _move_all(self, ids: list[str], values: dict[str, str], status: str, note: str) -> None:
        """UPDATE these requests (checked and locked by the caller) and log one event each."""
        for chunk in _chunks(ids):
            self._db.execute(update(REQUESTS).where(REQUESTS.c.id.in_(chunk)).values(**values))
        if ids:
            at = values["updated_at"]
            rows = [dict(request_id=rid, at=at, status=status, note=note) for rid in ids]
            self._db.execute(insert(EVENTS), rows)

    def cancel(self, rid: str, reason: str) -> None:
        """pending or set_aside -> cancelled, with who asked and why (a batch never takes it)."""
        self._move(rid, "cancelled", ("pending", "set_aside"), reason)

    def defer(self, rid: str, until: str, reason: str) -> None:
        """Keep a pending request out of batches until `until` (ISO time), with the reason."""
        with self._tx():
            pending = REQUESTS.c.status == "pending"
            if self._update(rid, pending, not_before=until, reason=reason) != 1:
                self.get(rid)  # KeyError naming an unknown id
                raise ValueError(f"request {rid} is not pending; only a pending one is deferred")
            self._event(rid, "pending", f"deferred until {until}: {reason}")

    def ready(self) -> list[StoredRequest]:
        """Pending requests a batch may take now (not deferred past now)."""
        now = _now().isoformat()
        return [r for r in self.list("pending") if r.not_before <= now]

    def failures(self, rid: str, prefix: str = "gates failed") -> int:
        """How many times batches holding this request ended with `prefix` (for the backoff)."""
        return sum(note.startswith(prefix) for _, st, note in self.history(rid) if st == "pending")

    def escalate(self, rid: str, reason: str) -> None:
        """pending -> set_aside after repeated failed batches: a person decides what next."""
        self._move(rid, "set_aside", ("pending",), reason)

    def reopen(self, rid: str, reason: str) -> None:
        """set_aside -> pending, not deferred: a person asked for another try."""
        self._move(rid, "pending", ("set_aside",), reason)

    def extend(self, rid: str, deadline: str, reason: str) -> None:
        """Move an open request's deadline (ISO time) later, with the reason in its history."""
        r = REQUESTS.c
        with self._tx():
            still_open = and_(
                r.deadline < deadline,
                r.status.in_(("pending", "processing", "awaiting_approval", "set_aside")),
            )
            if self._update(rid, still_open, deadline=deadline) != 1:
                self.get(rid)  # KeyError naming an unknown id
                raise ValueError(f"request {rid} is closed, or already due later")
            self._event(rid, self.get(rid).status, f"deadline extended to {deadline}: {reason}")

    def _move(self, rid: str, status: str, from_status: tuple[str, ...], reason: str) -> None:
        self.get(rid)  # KeyError naming an unknown id
        with self._tx():
            cleared = dict(status=status, reason=reason, batch_id="", not_before="")
            if self._update(rid, REQUESTS.c.status.in_(from_status), **cleared) != 1:
                raise ValueError(f"request {rid} is not {' or '.join(from_status)}")
            self._event(rid, status, reason)

    def set_aside(self, rid: str, reason: str) -> None:
        """processing -> set_aside: this request cannot be served; its batch goes on without it."""
        with self._tx():
            processing = REQUESTS.c.status == "processing"
            if self._update(rid, processing, status="set_aside", reason=reason, batch_id="") != 1:
                raise RuntimeError(f"request {rid} is not being processed")
            self._event(rid, "set_aside", reason)

    def transition(
        self,
        batch_id: str,
        status: str,
        reason: str = "",
        model_version: str = "",
        from_status: tuple[str, ...] = ("processing",),
    ) -> int:
        """Move every request of a batch (in one of `from_status`) to `status`."""
        if status not in STATUSES:
            raise ValueError(f"unknown status {status!r}")
        r = REQUESTS.c
        values = dict(status=status, reason=reason, updated_at=_now().isoformat())
        if model_version:
            values["model_version"] = model_version
        if status == "pending":
            values["batch_id"] = ""
        with self._tx():
            q = select(r.id).where(r.batch_id == batch_id, r.status.in_(from_status))
            rows = [row[0] for row in self._db.execute(q.with_for_update())]
            self._move_all(rows, values, status, reason or f"{batch_id} {model_version}".strip())
        return len(rows)

    # --- the per-model batch lease ------------------------------------------------------------

    def lease(self, model: str, lock: bool = False) -> Lease | None:
        cols = [LEASES.c[n] for n in ("model", "batch_id", "owner", "stage", "acquired_at",
                                      "expires_at")]  # fmt: skip
        q = select(*cols).where(LEASES.c.model == model)
        row = self._run(q.with_for_update() if lock else q).first()
        return Lease(*row) if row else None

    def take_lease(self, model: str, batch_id: str, ttl: timedelta) -> Lease | None:
        """Hold `model`'s batch lease for this process. Returns the stale lease it replaced (its
        batch must be recovered), None if it was free; LeaseHeld if a live batch holds it."""
        now = _now()
        try:
            with self._tx():
                old = self.lease(model, lock=True)  # PostgreSQL: a second taker waits here
                if old is not None and not old.stale(now):
                    raise _held(old)
                if old is not None:  # only the row read and locked above: see below
                    self._db.execute(delete(LEASES).where(
                        LEASES.c.model == model, LEASES.c.batch_id == old.batch_id,
                        LEASES.c.owner == old.owner,
                    ))  # fmt: skip
                self._db.execute(insert(LEASES).values(
                    model=model, batch_id=batch_id, owner=process_identity(), stage="start",
                    acquired_at=now.isoformat(), expires_at=(now + ttl).isoformat(),
                ))  # fmt: skip
        except IntegrityError:  # PostgreSQL: another worker inserted its lease first
            return self._lost_race(model, batch_id, ttl)
        return old

    # Why the DELETE names the row it read: PostgreSQL's READ COMMITTED takes a new snapshot per
    # statement. Two takers queued on a stale row: the first replaced it and committed, the
    # second's locking read then found no row (the one it waited on was deleted), and a DELETE by
    # model alone removed the first taker's fresh lease, so both held it. Now the second inserts,
    # meets the primary key, and is told who holds the lease.

    def _lost_race(self, model: str, batch_id: str, ttl: timedelta) -> Lease | None:
        held = self.lease(model)
        if held is None:  # the winner has already let go: try again
            return self.take_lease(model, batch_id, ttl)
        raise _held(held) from None

    def touch_lease(self, model: str, batch_id: str, stage: str | None, ttl: timedelta) -> None:
        """Extend a batch's lease from now, recording the stage it reached (None: the same stage).
        LeaseLost if the batch no longer holds it: another run took it over."""
        mine = and_(LEASES.c.model == model, LEASES.c.batch_id == batch_id)
        values = {"expires_at": (_now() + ttl).isoformat()}
        if stage is not None:
            values["stage"] = stage
        with self._tx():
            if self._db.execute(update(LEASES).where(mine).values(**values)).rowcount == 1:
                return
        now = self.lease(model)
        held = f"{now.describe()} holds it now" if now is not None else "nobody holds it now"
        who = f"{holder_kind(batch_id)} {batch_id}"
        raise LeaseLost(f"{who} lost the lease of {model} ({held}); it stops here")

    def drop_lease(self, model: str, batch_id: str) -> None:
        with self._tx():
            self._db.execute(
                delete(LEASES).where(LEASES.c.model == model, LEASES.c.batch_id == batch_id)
            )

    def _event(self, rid: str, status: str, note: str) -> None:
        self._db.execute(
            insert(EVENTS).values(request_id=rid, at=_now().isoformat(), status=status, note=note)
        )

    @contextmanager
    def _tx(self) -> Iterator[None]:
        """One write transaction (store_engine.transaction), its faults as one line."""
        with guarded(self.where), transaction(self._db, self.where.sqlite):
            yield
