"""Opening an MLflow tracking store: one quick probe of a database-backed store, so a damaged
sqlite file, a missing driver or an unreachable database server is one line naming the store
before any command acts (MLflow's own engine retries a failing connection for about 100 s, a
fixed count in mlflow.store.db.utils, before it gives up)."""

from __future__ import annotations

import re
import sqlite3
from contextlib import closing
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from mlflow.tracking import MlflowClient


def redact(uri: str) -> str:
    """A URI without its password (user:secret@host -> user:***@host)."""
    return re.sub(r"(//[^:/@]+):[^@/]*@", r"\1:***@", uri)


def first_line(err: BaseException) -> str:
    """A driver's message without SQLAlchemy's statement dump and background link."""
    orig = getattr(err, "orig", None)
    text = str(orig if orig is not None else err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def _store_hint(uri: str) -> str:
    if uri.startswith("sqlite:"):
        return "restore the file from a backup, or point MLFLOW_TRACKING_URI at a working store"
    return "check that the database server runs and MLFLOW_TRACKING_URI names it"


def _probe_database(uri: str) -> None:
    """One attempt at the database, with a connect timeout; raises what the driver raises."""
    if uri.startswith("sqlite:///"):
        path = Path(uri[len("sqlite:///") :])
        if path.is_file():  # a new store is MLflow's to create
            with closing(sqlite3.connect(f"{path.as_uri()}?mode=ro", uri=True)) as db:
                (check,) = db.execute("PRAGMA quick_check(1)").fetchone()
            if check != "ok":
                raise sqlite3.DatabaseError(f"database disk image is malformed ({check})")
        return
    import sqlalchemy

    args = {"connect_timeout": 10} if uri.startswith("postgres") else {}
    engine = sqlalchemy.create_engine(uri, connect_args=args, poolclass=sqlalchemy.pool.NullPool)
    try:
        with engine.connect():
            pass
    finally:
        engine.dispose()


def open_client(uri: str, error: type[Exception]) -> MlflowClient:
    """An MlflowClient on `uri`, after the probe; `error` (one line) when the store is unusable."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException
    from sqlalchemy.exc import SQLAlchemyError

    if uri.startswith(("http://", "https://", "file:", "databricks")):
        return MlflowClient(uri)
    try:
        _probe_database(uri)
        client = MlflowClient(uri)
        client.search_registered_models(max_results=1)
        return client
    except ImportError as err:
        raise error(
            f"tracking URI {redact(uri)} needs the database driver {err.name!r}; install it in "
            "this environment"
        ) from None
    except (SQLAlchemyError, MlflowException, sqlite3.DatabaseError) as err:
        raise error(
            f"MLflow tracking store {redact(uri)} cannot be used: {first_line(err)}; "
            f"{_store_hint(uri)}"
        ) from None
