"""Where the request store lives: an sqlite file in the workspace (the embedded default) or a
PostgreSQL database shared by every worker and every clone of a model's workspace.

Both go through SQLAlchemy on one connection in autocommit mode; a write transaction is begun
explicitly (sqlite: `BEGIN IMMEDIATE`, taking the write lock first, so two processes never both
read-then-write; PostgreSQL: `BEGIN`, row locks taken by the statements themselves).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import Connection, Engine, MetaData, create_engine
from sqlalchemy.engine import make_url

_SCHEMA_LOCK = 0x756E6C6561726E  # 'unlearn': the advisory lock key that guards table creation


@dataclass(frozen=True)
class StoreLocation:
    """An sqlite file or a database URL, as the user gave it (`shown` never holds a password)."""

    url: str
    shown: str
    file: Path | None  # the sqlite file, for file faults (full disk, read-only, damaged)

    @property
    def sqlite(self) -> bool:
        return self.file is not None


def store_location(where: str | Path) -> StoreLocation:
    """A path is an sqlite file; `postgresql://...` (SQLAlchemy URL) a shared database."""
    text_ = str(where)
    if "://" not in text_:
        path = Path(text_)
        return StoreLocation(f"sqlite:///{path}", str(path), path)
    url = make_url(text_)
    if url.get_backend_name() == "sqlite":
        path = Path(url.database or "")
        return StoreLocation(text_, str(path), path)
    if url.get_backend_name() != "postgresql":
        raise ValueError(f"request store {text_}: only sqlite files and postgresql:// URLs")
    shown = url.render_as_string(hide_password=True)
    if url.drivername == "postgresql":
        url = url.set(drivername="postgresql+psycopg")  # the driver the project installs
    return StoreLocation(url.render_as_string(hide_password=False), shown, None)


def connect(loc: StoreLocation, metadata: MetaData) -> tuple[Engine, Connection]:
    """Open the store (creating its tables) on one autocommit connection."""
    args = {"timeout": 30} if loc.sqlite else {"connect_timeout": 10}
    engine = create_engine(loc.url, connect_args=args, isolation_level="AUTOCOMMIT")
    conn = engine.connect()
    if loc.sqlite:
        _sqlite_pragmas(conn)
        metadata.create_all(conn)
    else:
        _create_locked(conn, metadata)
    return engine, conn


def _create_locked(conn: Connection, metadata: MetaData) -> None:
    """create_all under a transaction-scoped advisory lock: workers opening a brand-new database
    at once each found the tables missing and ran CREATE TABLE, and a late one failed
    ('relation "leases" already exists'). With the lock the others wait, then find them."""
    with transaction(conn, sqlite=False):
        conn.exec_driver_sql(f"SELECT pg_advisory_xact_lock({_SCHEMA_LOCK})")
        metadata.create_all(conn)


def _sqlite_pragmas(conn: Connection) -> None:
    # A damaged file is found here, before any command acts on half of it (quick_check reads
    # every page once: milliseconds for 10,000 requests).
    (check,) = conn.exec_driver_sql("PRAGMA quick_check(1)").one()
    if check != "ok":
        import sqlite3

        raise sqlite3.DatabaseError(f"database disk image is malformed ({check})")
    conn.exec_driver_sql("PRAGMA journal_mode=WAL")
    conn.exec_driver_sql("PRAGMA synchronous=FULL")


def begin(conn: Connection, sqlite: bool) -> None:
    conn.exec_driver_sql("BEGIN IMMEDIATE" if sqlite else "BEGIN")


@contextmanager
def transaction(conn: Connection, sqlite: bool) -> Iterator[None]:
    """One write transaction: begun, then COMMIT, or ROLLBACK on an exception."""
    begin(conn, sqlite)
    try:
        yield
    except BaseException:
        if in_transaction(conn):  # a failed COMMIT / full disk / lost connection may have ended it
            conn.exec_driver_sql("ROLLBACK")
        raise
    conn.exec_driver_sql("COMMIT")


def in_transaction(conn: Connection) -> bool:
    raw = conn.connection.dbapi_connection
    if hasattr(raw, "in_transaction"):  # sqlite3
        return raw.in_transaction
    return raw.info.transaction_status != 0  # psycopg: 0 = idle, outside any transaction
