"""The request store's file faults (damaged, read-only, full disk) as one line naming the file."""

from __future__ import annotations

import shutil
import sqlite3
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


class StoreError(RuntimeError):
    """The request store's file cannot be used (damaged, read-only, full disk); nothing changed."""


# sqlite's own words -> what is wrong with the file, and what to do about it.
_FAULTS = (
    ("not a database", "is not an sqlite database (overwritten?)", "restore it from a backup"),
    ("malformed", "is damaged (truncated or corrupt)", "restore it from a backup"),
    ("readonly", "is on a read-only file system or file", "make the workspace writable"),
    ("disk is full", "cannot grow: the disk is full", "free space on its disk and retry"),
    ("unable to open", "cannot be opened", "check that its folder exists and is writable"),
    ("disk i/o error", "hit a disk I/O error", "check the disk, then retry"),
    ("locked", "stayed locked for 30 s by another process", "retry when that process is done"),
)


def store_fault(path: Path, err: sqlite3.Error) -> StoreError:
    text = str(err).lower()
    if "i/o error" in text and shutil.disk_usage(path.parent).free < 1 << 20:
        text = "disk is full"  # sqlite reports a WAL index it cannot grow as an I/O error
    for needle, what, todo in _FAULTS:
        if needle in text:
            return StoreError(f"request store {path} {what}; {todo} (the store was not changed)")
    return StoreError(f"request store {path}: {err} (the store was not changed)")


@contextmanager
def guarded(path: Path) -> Iterator[None]:
    """sqlite faults as one line naming the file; constraint violations stay what they are."""
    try:
        yield
    except sqlite3.IntegrityError:
        raise
    except sqlite3.DatabaseError as err:
        raise store_fault(path, err) from None
