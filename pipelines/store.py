"""Durable request store (sqlite, WAL, one transaction per state change).

Statuses: pending -> processing -> awaiting_approval -> certified, and back to pending (with a
reason) when a batch fails its gates, crashes, or its model version is rejected. A request that
can no longer be resolved against the pinned snapshot (its samples were erased by an earlier
batch, its subject is unknown) is `set_aside` with the reason, so the rest of its batch proceeds.
Every change is also appended to `events`, so the history of a request is never overwritten.
"""

from __future__ import annotations

import sqlite3
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from components.requests import ForgetRequest
from pipelines.lease import Lease, LeaseHeld, process_identity
from pipelines.store_faults import guarded

STATUSES = ("pending", "processing", "awaiting_approval", "certified", "set_aside", "cancelled")

SCHEMA = """
CREATE TABLE IF NOT EXISTS requests (
  id TEXT PRIMARY KEY,
  dedup_key TEXT NOT NULL UNIQUE,
  kind TEXT NOT NULL,
  payload TEXT NOT NULL,
  n_samples INTEGER NOT NULL,
  received_at TEXT NOT NULL,
  deadline TEXT NOT NULL,
  status TEXT NOT NULL CHECK (status IN
    ('pending','processing','awaiting_approval','certified','set_aside','cancelled')),
  reason TEXT NOT NULL DEFAULT '',
  batch_id TEXT NOT NULL DEFAULT '',
  model_version TEXT NOT NULL DEFAULT '',
  updated_at TEXT NOT NULL,
  not_before TEXT NOT NULL DEFAULT '',
  submitted_by TEXT NOT NULL DEFAULT ''
);
CREATE TABLE IF NOT EXISTS leases (
  model TEXT PRIMARY KEY,
  batch_id TEXT NOT NULL,
  owner TEXT NOT NULL,
  stage TEXT NOT NULL,
  acquired_at TEXT NOT NULL,
  expires_at TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS events (
  request_id TEXT NOT NULL REFERENCES requests(id),
  at TEXT NOT NULL,
  status TEXT NOT NULL,
  note TEXT NOT NULL
);
"""


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
    def __init__(self, path: Path) -> None:
        self.path = path
        with guarded(path):
            path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(path, timeout=30, isolation_level=None)
            # A damaged file is found here, before any command acts on half of it (quick_check
            # reads every page once: milliseconds for 10,000 requests).
            (check,) = self._db.execute("PRAGMA quick_check(1)").fetchone()
            if check != "ok":
                raise sqlite3.DatabaseError(f"database disk image is malformed ({check})")
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=FULL")
            self._db.executescript(SCHEMA)
            self._migrate()

    def _migrate(self) -> None:
        """A store made by an older version (fewer statuses, no `not_before` or `submitted_by`):
        sqlite cannot
        alter a CHECK constraint, so the table is rebuilt from SCHEMA with its rows, in one
        transaction."""
        (sql,) = self._db.execute(
            "SELECT sql FROM sqlite_master WHERE type = 'table' AND name = 'requests'"
        ).fetchone()
        if all(f"'{st}'" in sql for st in STATUSES) and "submitted_by" in sql:
            return
        cols = ", ".join(r[1] for r in self._db.execute("PRAGMA table_info(requests)"))
        create = SCHEMA[: SCHEMA.index(");") + 2].replace(
            "CREATE TABLE IF NOT EXISTS requests", "CREATE TABLE requests_v2"
        )
        with self._tx():
            self._db.execute(create)
            self._db.execute(f"INSERT INTO requests_v2 ({cols}) SELECT {cols} FROM requests")
            self._db.execute("DROP TABLE requests")
            self._db.execute("ALTER TABLE requests_v2 RENAME TO requests")

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> RequestStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _row(self, r: tuple) -> StoredRequest:
        return StoredRequest(r[0], r[1], ForgetRequest.model_validate_json(r[2]), *r[3:])

    _COLS = (
        "id, kind, payload, n_samples, received_at, deadline, status, reason, batch_id, "
        "model_version, not_before, submitted_by"
    )

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
        names a different request is a ValueError. Returns (id, created) per item."""
        now = _now()
        deadline = (now + timedelta(days=deadline_days)).isoformat()
        out = []
        with self._tx():
            for req, n, client_id in items:
                key = req.dedup_key()
                row = self._db.execute(
                    "SELECT id, dedup_key FROM requests WHERE dedup_key = ? OR id = ?",
                    (key, client_id or ""),
                ).fetchone()
                if row is not None:
                    if client_id and row[0] == client_id and row[1] != key:
                        raise ValueError(f"request id {client_id!r} names a different request")
                    out.append((row[0], False))
                    continue
                rid = client_id or f"req-{uuid.uuid4().hex[:12]}"
                self._db.execute(
                    "INSERT INTO requests (id, dedup_key, kind, payload, n_samples, received_at, "
                    "deadline, status, updated_at, submitted_by) "
                    "VALUES (?, ?, ?, ?, ?, ?, ?, 'pending', ?, ?)",
                    (rid, key, req.kind, req.model_dump_json(), n, now.isoformat(), deadline,
                     now.isoformat(), submitted_by),
                )  # fmt: skip
                self._event(rid, "pending", "received")
                out.append((rid, True))
        return out

    def get(self, rid: str) -> StoredRequest:
        row = self._db.execute(f"SELECT {self._COLS} FROM requests WHERE id = ?", (rid,)).fetchone()
        if row is None:
            raise KeyError(f"no request {rid!r}")
        return self._row(row)

    def list(self, status: str | None = None) -> list[StoredRequest]:
        q = (
            f"SELECT {self._COLS} FROM requests"
            + (" WHERE status = ?" if status else "")
            + " ORDER BY received_at, id"
        )
        return [self._row(r) for r in self._db.execute(q, (status,) if status else ())]

    def by_batch(self, batch_id: str) -> list[StoredRequest]:
        return [
            self._row(r)
            for r in self._db.execute(
                f"SELECT {self._COLS} FROM requests WHERE batch_id = ? ORDER BY id", (batch_id,)
            )
        ]

    def history(self, rid: str) -> list[tuple[str, str, str]]:
        return list(
            self._db.execute(
                "SELECT at, status, note FROM events WHERE request_id = ? ORDER BY rowid", (rid,)
            )
        )

    def claim(self, ids: list[str], batch_id: str) -> None:
        """pending -> processing, atomically: all of them or none."""
        with self._tx():
            for rid in ids:
                cur = self._db.execute(
                    "UPDATE requests SET status='processing', batch_id=?, reason='', updated_at=?"
                    " WHERE id=? AND status='pending'",
                    (batch_id, _now().isoformat(), rid),
                )
                if cur.rowcount != 1:
                    raise RuntimeError(f"request {rid} is no longer pending")
                self._event(rid, "processing", f"claimed by {batch_id}")

    def cancel(self, rid: str, reason: str) -> None:
        """pending or set_aside -> cancelled, with who asked and why (a batch never takes it)."""
        self._move(rid, "cancelled", ("pending", "set_aside"), reason)

    def defer(self, rid: str, until: str, reason: str) -> None:
        """Keep a pending request out of batches until `until` (ISO time), with the reason."""
        with self._tx():
            cur = self._db.execute(
                "UPDATE requests SET not_before=?, reason=?, updated_at=? "
                "WHERE id=? AND status='pending'",
                (until, reason, _now().isoformat(), rid),
            )
            if cur.rowcount != 1:
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
        with self._tx():
            cur = self._db.execute(
                "UPDATE requests SET deadline=?, updated_at=? WHERE id=? AND deadline < ? AND "
                "status IN ('pending','processing','awaiting_approval','set_aside')",
                (deadline, _now().isoformat(), rid, deadline),
            )
            if cur.rowcount != 1:
                self.get(rid)  # KeyError naming an unknown id
                raise ValueError(f"request {rid} is closed, or already due later")
            self._event(rid, self.get(rid).status, f"deadline extended to {deadline}: {reason}")

    def _move(self, rid: str, status: str, from_status: tuple[str, ...], reason: str) -> None:
        self.get(rid)  # KeyError naming an unknown id
        marks = ",".join("?" * len(from_status))
        with self._tx():
            cur = self._db.execute(
                f"UPDATE requests SET status=?, reason=?, batch_id='', not_before='', updated_at=? "
                f"WHERE id=? AND status IN ({marks})",
                (status, reason, _now().isoformat(), rid, *from_status),
            )
            if cur.rowcount != 1:
                raise ValueError(f"request {rid} is not {' or '.join(from_status)}")
            self._event(rid, status, reason)

    def set_aside(self, rid: str, reason: str) -> None:
        """processing -> set_aside: this request cannot be served; its batch goes on without it."""
        with self._tx():
            cur = self._db.execute(
                "UPDATE requests SET status='set_aside', reason=?, batch_id='', updated_at=?"
                " WHERE id=? AND status='processing'",
                (reason, _now().isoformat(), rid),
            )
            if cur.rowcount != 1:
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
        marks = ",".join("?" * len(from_status))
        with self._tx():
            rows = [
                r[0]
                for r in self._db.execute(
                    f"SELECT id FROM requests WHERE batch_id=? AND status IN ({marks})",
                    (batch_id, *from_status),
                )
            ]
            for rid in rows:
                self._db.execute(
                    "UPDATE requests SET status=?, reason=?, model_version=COALESCE(NULLIF(?, ''), "
                    "model_version),"
                    " batch_id=CASE WHEN ?='pending' THEN '' ELSE batch_id END, updated_at=? WHERE "
                    "id=?",
                    (status, reason, model_version, status, _now().isoformat(), rid),
                )
                self._event(rid, status, reason or f"{batch_id} {model_version}".strip())
        return len(rows)

    # --- the per-model batch lease ------------------------------------------------------------

    def lease(self, model: str) -> Lease | None:
        row = self._db.execute(
            "SELECT model, batch_id, owner, stage, acquired_at, expires_at FROM leases "
            "WHERE model = ?",
            (model,),
        ).fetchone()
        return Lease(*row) if row else None

    def take_lease(self, model: str, batch_id: str, ttl: timedelta) -> Lease | None:
        """Hold `model`'s batch lease for this process. Returns the stale lease it replaced (its
        batch must be recovered), None if it was free; LeaseHeld if a live batch holds it."""
        now = _now()
        with self._tx():
            old = self.lease(model)
            if old is not None and not old.stale(now):
                raise LeaseHeld(f"{old.describe()} is running; one batch per model at a time")
            self._db.execute(
                "INSERT OR REPLACE INTO leases VALUES (?, ?, ?, 'start', ?, ?)",
                (model, batch_id, process_identity(), now.isoformat(), (now + ttl).isoformat()),
            )
        return old

    def touch_lease(self, model: str, batch_id: str, stage: str, ttl: timedelta) -> None:
        """Record the stage a batch reached and extend its lease from now."""
        with self._tx():
            self._db.execute(
                "UPDATE leases SET stage = ?, expires_at = ? WHERE model = ? AND batch_id = ?",
                (stage, (_now() + ttl).isoformat(), model, batch_id),
            )

    def drop_lease(self, model: str, batch_id: str) -> None:
        with self._tx():
            self._db.execute(
                "DELETE FROM leases WHERE model = ? AND batch_id = ?", (model, batch_id)
            )

    def _event(self, rid: str, status: str, note: str) -> None:
        self._db.execute(
            "INSERT INTO events (request_id, at, status, note) VALUES (?, ?, ?, ?)",
            (rid, _now().isoformat(), status, note),
        )

    @contextmanager
    def _tx(self) -> Iterator[None]:
        """One write transaction: BEGIN IMMEDIATE, then COMMIT, or ROLLBACK on an exception."""
        with guarded(self.path):
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield
            except BaseException:
                if self._db.in_transaction:  # a failed COMMIT / full disk may have ended it
                    self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")
