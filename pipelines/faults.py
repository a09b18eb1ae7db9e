"""Faults of the machine rather than of the input (full disk, read-only files, a database that
fails mid-command), told as one line: which file or store, and what to do.

The stores check themselves when they open (RequestStore, Registry); what is left can strike in
the middle of any command, deep inside git, DVC, MLflow or sqlite, so `unlearn` looks at the whole
chain of causes of an uncaught exception once, here, before it would print a traceback.
"""

from __future__ import annotations

import errno
from collections.abc import Callable, Iterator

# errno -> what it means for the command, and what to do.
_OS_FAULTS = {
    errno.ENOSPC: ("no space left on device", "free space on that disk and retry"),
    errno.EDQUOT: ("disk quota exceeded", "free space or raise the quota and retry"),
    errno.EROFS: ("read-only file system", "run on a writable copy of the workspace"),
    errno.EACCES: ("permission denied", "run as the workspace's owner or fix its permissions"),
    errno.EPERM: ("operation not permitted", "run as the workspace's owner"),
    errno.EIO: ("input/output error", "check the disk, then retry"),
}


def _causes(exc: BaseException) -> Iterator[BaseException]:
    seen: set[int] = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def _os_fault(exc: BaseException) -> str | None:
    if not isinstance(exc, OSError) or exc.errno not in _OS_FAULTS:
        return None
    what, todo = _OS_FAULTS[exc.errno]
    where = f"{exc.filename}: " if exc.filename else ""
    return f"{where}{what}; {todo}"


# Faults that only say so in text: sqlite (through SQLAlchemy: MLflow's store) and git / DVC
# relaying the operating system's message.
_TEXT_FAULTS = (
    ("no space left", *_OS_FAULTS[errno.ENOSPC]),
    ("disk is full", *_OS_FAULTS[errno.ENOSPC]),
    ("read-only file system", *_OS_FAULTS[errno.EROFS]),
    ("readonly database", *_OS_FAULTS[errno.EROFS]),
    ("malformed", "the database is damaged", "restore it from a backup"),
    ("not a database", "the file is not a database", "restore it from a backup"),
)


def _text_fault(exc: BaseException) -> str | None:
    text = str(getattr(exc, "orig", None) or exc).lower()
    for needle, what, todo in _TEXT_FAULTS:
        if needle in text:
            return f"{_origin(exc)}: {what}; {todo} (the command stopped before finishing)"
    return None


def _origin(exc: BaseException) -> str:
    module = type(exc).__module__.split(".")[0]
    return {"sqlalchemy": "the MLflow tracking store", "sqlite3": "an sqlite database"}.get(
        module, "a write"
    )


TELLERS: tuple[Callable[[BaseException], str | None], ...] = (_os_fault, _text_fault)


def explain(exc: BaseException) -> str | None:
    """One line for a machine fault anywhere in the exception's chain of causes, else None."""
    for cause in _causes(exc):
        for tell in TELLERS:
            line = tell(cause)
            if line:
                return line
    return None
