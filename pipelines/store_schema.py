"""The request store's tables (SQLAlchemy Core: the same on sqlite and PostgreSQL), and the
migration of sqlite stores made by older versions."""

from __future__ import annotations

from sqlalchemy import (
    CheckConstraint,
    Column,
    Connection,
    ForeignKey,
    Integer,
    MetaData,
    Table,
    Text,
    text,
)

STATUSES = ("pending", "processing", "awaiting_approval", "certified", "set_aside", "cancelled")

META = MetaData()
_STATUS_CHECK = "status IN (" + ",".join(f"'{s}'" for s in STATUSES) + ")"
REQUESTS = Table(
    "requests", META,
    Column("id", Text, primary_key=True),
    Column("dedup_key", Text, nullable=False, unique=True),
    Column("kind", Text, nullable=False),
    Column("payload", Text, nullable=False),
    Column("n_samples", Integer, nullable=False),
    Column("received_at", Text, nullable=False),
    Column("deadline", Text, nullable=False),
    Column("status", Text, CheckConstraint(_STATUS_CHECK), nullable=False),
    Column("reason", Text, nullable=False, server_default=""),
    Column("batch_id", Text, nullable=False, server_default=""),
    Column("model_version", Text, nullable=False, server_default=""),
    Column("updated_at", Text, nullable=False),
    Column("not_before", Text, nullable=False, server_default=""),
    Column("submitted_by", Text, nullable=False, server_default=""),
)  # fmt: skip
LEASES = Table(
    "leases", META,
    Column("model", Text, primary_key=True),
    Column("batch_id", Text, nullable=False),
    Column("owner", Text, nullable=False),
    Column("stage", Text, nullable=False),
    Column("acquired_at", Text, nullable=False),
    Column("expires_at", Text, nullable=False),
)  # fmt: skip
# `seq` orders a request's history (in sqlite it is the rowid: older stores are migrated to it).
EVENTS = Table(
    "events", META,
    Column("seq", Integer, primary_key=True, autoincrement=True),
    Column("request_id", Text, ForeignKey("requests.id"), nullable=False),
    Column("at", Text, nullable=False),
    Column("status", Text, nullable=False),
    Column("note", Text, nullable=False),
)  # fmt: skip


def table_sql(conn: Connection, name: str) -> str:
    """sqlite: the CREATE statement of `name`, which tells an older store's columns and checks."""
    row = conn.execute(
        text("SELECT sql FROM sqlite_master WHERE type = 'table' AND name = :n"), {"n": name}
    ).one_or_none()
    return row[0] if row else ""


def migrate_sqlite(conn: Connection) -> None:
    """An sqlite store made by an older version (fewer statuses, no `not_before` or
    `submitted_by`, events without `seq`): sqlite cannot alter a CHECK constraint or add a key,
    so the tables are rebuilt with their rows, in one transaction."""
    sql = table_sql(conn, "requests")
    old_requests = not (all(f"'{st}'" in sql for st in STATUSES) and "submitted_by" in sql)
    old_events = "seq" not in table_sql(conn, "events")
    if not (old_requests or old_events):
        return
    conn.exec_driver_sql("BEGIN IMMEDIATE")
    try:
        if old_requests:
            _rebuild(conn, REQUESTS, "*")
        if old_events:  # the rowid was the order: it becomes `seq`
            _rebuild(conn, EVENTS, "rowid, request_id, at, status, note")
    except BaseException:
        conn.exec_driver_sql("ROLLBACK")
        raise
    conn.exec_driver_sql("COMMIT")


def _rebuild(conn: Connection, table: Table, source_cols: str) -> None:
    """Copy `table`'s rows into a table made from its current definition, which then takes its
    name (built beside it and renamed, so other tables' references keep their target)."""
    have = [r[1] for r in conn.exec_driver_sql(f"PRAGMA table_info({table.name})")]
    cols = [c.name for c in table.columns if c.name in have or source_cols != "*"]
    scratch = MetaData()
    REQUESTS.to_metadata(scratch)  # what events' foreign key names
    table.to_metadata(scratch, name=f"{table.name}_v2").create(conn)
    pick = ", ".join(cols) if source_cols == "*" else source_cols
    conn.exec_driver_sql(
        f"INSERT INTO {table.name}_v2 ({', '.join(cols)}) SELECT {pick} FROM {table.name}"
    )
    conn.exec_driver_sql(f"DROP TABLE {table.name}")
    conn.exec_driver_sql(f"ALTER TABLE {table.name}_v2 RENAME TO {table.name}")
