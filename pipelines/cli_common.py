"""What every `unlearn` command shares: the consoles, the workspace it runs in, CliError."""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, TextIO

from rich.console import Console

from pipelines.env import quiet_environment

if TYPE_CHECKING:
    from pipelines.workspace import Workspace


def _width(stream: TextIO) -> int | None:
    """The terminal's width; piped or redirected, wide enough that tables do not wrap (rich would
    fold them at 80 columns), unless COLUMNS says otherwise."""
    if stream.isatty() or os.environ.get("COLUMNS"):
        return None
    return 250


# markup=False: what these print is mostly text that people and stores wrote (reasons, paths,
# model names). Rich markup would eat "[bold]" in it and raise on a closing tag that opens
# nothing ("see [/legal]"); styled pieces are rich Text objects instead.
out = Console(highlight=False, markup=False, width=_width(sys.stdout))
err = Console(stderr=True, highlight=False, markup=False, width=_width(sys.stderr))
options: dict[str, Path | None] = {"workspace": None}


def current_workspace(read_only: bool = False) -> Workspace:
    """The workspace named by --workspace, else found from the current directory. A command that
    writes checks first that it can (a read-only mount or copy fails here, before any work)."""
    from pipelines.workspace import find_workspace

    ws = find_workspace(options["workspace"])
    if not read_only:
        ws.check_writable()
    quiet_environment(ws.prefect_home)
    return ws


def error_line(message: str) -> None:
    """`error: message` on stderr as one line however long: rich would wrap it at the console's
    width, and a script (or a person's grep) reads an error line by line."""
    err.print(f"error: {message}", soft_wrap=True)


class CliError(Exception):
    """A bad argument found by a command itself (reported as one `error:` line, exit 2)."""
