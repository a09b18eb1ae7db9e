"""Durable request store (sqlite, WAL, one transaction per state change).

Statuses: pending -> processing -> awaiting_approval -> certified, and back to pending (with a
reason) when a batch fails its gates, crashes, or its model version is rejected. Every change is
also appended to `events`, so the history of a request is never overwritten.
"""

from __future__ import annotations

import json
import os
import socket
import sqlite3
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from components.requests import ForgetRequest

STATUSES = ("pending", "processing", "awaiting_approval", "certified")

SCHEMA = """
CREATE TABLE IF NOT EXISTS requests (
  id TEXT PRIMARY KEY,
  dedup_key TEXT NOT NULL UNIQUE,
  kind TEXT NOT NULL,
  payload TEXT NOT NULL,
  n_samples INTEGER NOT NULL,
  received_at TEXT NOT NULL,
  deadline TEXT NOT NULL,
  status TEXT NOT NULL CHECK (status IN ('pending','processing','awaiting_approval','certified')),
  reason TEXT NOT NULL DEFAULT '',
  batch_id TEXT NOT NULL DEFAULT '',
  model_version TEXT NOT NULL DEFAULT '',
  updated_at TEXT NOT NULL
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

    @property
    def scenario(self) -> str:
        return self.request.scenario


class LeaseHeld(RuntimeError):
    """Another batch of the same model is running (its process is alive and its lease current)."""


def process_identity(pid: int | None = None) -> str:
    """host:pid:start-time of a process; the start time tells a reused pid from the original."""
    pid = os.getpid() if pid is None else pid
    return f"{socket.gethostname()}:{pid}:{_start_ticks(pid)}"


def _start_ticks(pid: int) -> str:
    try:  # Linux: field 22 of /proc/PID/stat, after the parenthesised command name
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return ""


def owner_alive(owner: str) -> bool | None:
    """Whether the process named by `owner` still runs; None when it ran on another host (then
    only the lease's expiry can tell)."""
    host, pid, ticks = owner.rsplit(":", 2)
    if host != socket.gethostname():
        return None
    return _start_ticks(int(pid)) == ticks != "" or (ticks == "" and _pid_exists(int(pid)))


def _pid_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass(frozen=True)
class Lease:
    """The one running batch of a model: who runs it, which stage it reached, until when."""

    model: str
    batch_id: str
    owner: str
    stage: str
    acquired_at: str
    expires_at: str

    def stale(self, now: datetime | None = None) -> str:
        """Why this lease no longer protects a running batch ("" while it does)."""
        if owner_alive(self.owner) is False:
            return f"its process ({self.owner.rsplit(':', 1)[0]}) is gone"
        if datetime.fromisoformat(self.expires_at) <= (now or _now()):
            return f"its lease expired at {self.expires_at}"
        return ""

    def describe(self) -> str:
        return (
            f"batch {self.batch_id} of {self.model} (process {self.owner.rsplit(':', 1)[0]}, "
            f"stage {self.stage}, since {self.acquired_at})"
        )


class RequestStore:
    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, timeout=30, isolation_level=None)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(SCHEMA)

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> RequestStore:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _row(self, r: tuple) -> StoredRequest:
        return StoredRequest(
            r[0],
            r[1],
            ForgetRequest.model_validate_json(r[2]),
            r[3],
            r[4],
            r[5],
            r[6],
            r[7],
            r[8],
            r[9],
        )

    _COLS = (
        "id, kind, payload, n_samples, received_at, deadline, status, reason, batch_id, "
        "model_version"
    )

    def add(
        self, req: ForgetRequest, n_samples: int, deadline_days: int
    ) -> tuple[StoredRequest, bool]:
        """Store a validated request as pending. Returns (request, created); a duplicate of an
        existing request returns that one with created=False."""
        key = req.dedup_key()
        existing = self._db.execute(
            f"SELECT {self._COLS} FROM requests WHERE dedup_key = ?", (key,)
        ).fetchone()
        if existing:
            return self._row(existing), False
        now = _now()
        rid = f"req-{uuid.uuid4().hex[:12]}"
        with self._tx():
            self._db.execute(
                "INSERT INTO requests (id, dedup_key, kind, payload, n_samples, received_at, "
                "deadline, status, updated_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, 'pending', ?)",
                (
                    rid,
                    key,
                    req.kind,
                    req.model_dump_json(),
                    n_samples,
                    now.isoformat(),
                    (now + timedelta(days=deadline_days)).isoformat(),
                    now.isoformat(),
                ),
            )
            self._event(rid, "pending", "received")
        return self.get(rid), True

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
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")


def payload_summary(r: StoredRequest) -> str:
    req = r.request
    if req.kind == "class":
        return f"class {req.class_label}"
    if req.kind == "subject":
        return f"subject {req.subject_id}"
    ids = list(req.sample_ids)
    return ", ".join(ids[:3]) + (f" (+{len(ids) - 3})" if len(ids) > 3 else "")


def to_json(r: StoredRequest) -> str:
    return json.dumps(
        {"id": r.id, "kind": r.kind, "status": r.status, "reason": r.reason, "deadline": r.deadline}
    )
