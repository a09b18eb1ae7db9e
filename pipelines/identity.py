"""Who is acting: the identity recorded on requests, batches and decisions, and checked for
separation of duties (components/promotion.py)."""

from __future__ import annotations

import getpass
import os


def whoami() -> str:
    """MLflow's user when the tracking server authenticates (`mlflow server --app-name
    basic-auth`: it refuses any call whose MLFLOW_TRACKING_USERNAME / PASSWORD do not match, so
    the name is proven by every registry call); else UNLEARN_USER; else the OS login."""
    for var in ("MLFLOW_TRACKING_USERNAME", "UNLEARN_USER"):
        if name := os.environ.get(var, "").strip():
            return name
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no login name (a container with an unnamed uid)
        return f"uid-{os.getuid()}"


def authenticated() -> str | None:
    """The identity the tracking server authenticates, if it does (None: self-declared)."""
    return os.environ.get("MLFLOW_TRACKING_USERNAME", "").strip() or None
