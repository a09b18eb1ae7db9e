"""The request store's faults as one line naming the store: an sqlite file damaged, read-only or
on a full disk; a PostgreSQL server that cannot be reached or refuses the login."""

from __future__ import annotations

import shutil
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

from sqlalchemy.exc import DBAPIError, IntegrityError

if TYPE_CHECKING:
    from pipelines.store_engine import StoreLocation


class StoreError(RuntimeError):
    """The request store cannot be used (damaged, read-only, full disk, unreachable server);
    nothing changed."""


# The database's own words -> what is wrong with the store, and what to do about it.
_FAULTS = (
    ("not a database", "is not an sqlite database (overwritten?)", "restore it from a backup"),
    ("malformed", "is damaged (truncated or corrupt)", "restore it from a backup"),
    ("readonly", "is on a read-only file system or file", "make the workspace writable"),
    ("disk is full", "cannot grow: the disk is full", "free space on its disk and retry"),
    ("unable to open", "cannot be opened", "check that its folder exists and is writable"),
    ("disk i/o error", "hit a disk I/O error", "check the disk, then retry"),
    ("locked", "stayed locked for 30 s by another process", "retry when that process is done"),
    ("password authentication failed", "refused the login", "check the user and password"),
    ("connection refused", "cannot be reached", "start the database server or fix the URL"),
    ("could not translate host", "cannot be reached (unknown host)", "fix the URL"),
    ("timeout expired", "did not answer within 10 s", "check the server and the network"),
    ("does not exist", "names a database or role the server does not have", "create it first"),
)


def store_fault(where: StoreLocation, err: BaseException) -> StoreError:
    text = str(err).lower()
    if where.file is not None and "i/o error" in text:
        if shutil.disk_usage(where.file.parent).free < 1 << 20:
            text = "disk is full"  # sqlite reports a WAL index it cannot grow as an I/O error
    for needle, what, todo in _FAULTS:
        if needle in text:
            return StoreError(f"request store {where.shown} {what}; {todo} (the store was not "
                              "changed)")  # fmt: skip
    first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    return StoreError(f"request store {where.shown}: {first} (the store was not changed)")


@contextmanager
def guarded(where: StoreLocation) -> Iterator[None]:
    """Database faults as one line naming the store; constraint violations stay what they are."""
    try:
        yield
    except IntegrityError:
        raise
    except DBAPIError as err:
        raise store_fault(where, err.orig) from None
    except sqlite3.DatabaseError as err:  # the quick_check at open
        raise store_fault(where, err) from None
