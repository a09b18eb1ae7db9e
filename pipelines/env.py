"""Process environment for the CLI, the demo, tests and CI: telemetry off, quiet, bounded timeouts.

Called explicitly by entry points (never at import), and never overrides a value the user set.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

QUIET_DEFAULTS = {
    "DO_NOT_TRACK": "true",  # the string "true": MLflow ignores "1"
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    "MLFLOW_SKIP_PIP_REQUIREMENTS_CHECK": "true",
    # MLflow's own retries: a transient 5xx or a dropped connection after hours of GPU work must
    # not kill the batch (3 retries, 1, 2, 4 s apart), yet a dead server fails in seconds.
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "3",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "20",
    # MLflow logs its database migrations and input-example validation at INFO on every call.
    "MLFLOW_LOGGING_LEVEL": "WARNING",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
    "PREFECT_LOGGING_LEVEL": "WARNING",
    # Task failures are already turned into one-line errors by the CLI; their tracebacks still
    # reach the Prefect server (API handler) for the UI, just not the terminal.
    "PREFECT_LOGGING_HANDLERS_CONSOLE_LEVEL": "CRITICAL",
    "DVC_NO_ANALYTICS": "1",
    "HF_HUB_OFFLINE": "1",
    "GIT_TERMINAL_PROMPT": "0",
}


def quiet_environment(prefect_home: Path | None = None) -> None:
    for key, value in QUIET_DEFAULTS.items():
        os.environ.setdefault(key, value)
    # DVC's API logs "You can now commit..." hints at INFO: noise for a pipeline that commits
    # itself.
    logging.getLogger("dvc").setLevel(logging.WARNING)
    if prefect_home is not None:
        os.environ.setdefault("PREFECT_HOME", str(prefect_home))
