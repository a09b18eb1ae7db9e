"""What every `unlearn` command shares: the consoles, the workspace it runs in, CliError."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from rich.console import Console

from pipelines.env import quiet_environment

if TYPE_CHECKING:
    from pipelines.workspace import Workspace

out = Console(highlight=False)
err = Console(stderr=True, highlight=False)
options: dict[str, Path | None] = {"workspace": None}


def current_workspace() -> Workspace:
    """The workspace named by --workspace, else found from the current directory."""
    from pipelines.workspace import find_workspace

    ws = find_workspace(options["workspace"])
    quiet_environment(ws.prefect_home)
    return ws


class CliError(Exception):
    """A bad argument found by a command itself (reported as one `error:` line, exit 2)."""
