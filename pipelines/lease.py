"""The lease a running batch holds on its model: who runs it (host, pid and the process's start
time, so a reused pid is not taken for the original), the stage it reached, until when.

A process killed with SIGKILL cannot let go of anything; the lease makes that visible: on the
same host a holder whose process is gone is known dead at once, elsewhere the expiry decides.
"""

from __future__ import annotations

import os
import socket
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path


class LeaseHeld(RuntimeError):
    """Another batch of the same model is running (its process is alive and its lease current)."""


class LeaseLost(RuntimeError):
    """This batch's lease was taken over (it ran out, or its holder looked dead): the batch must
    stop, since the taker recovers its requests and may be running beside it."""


def process_identity(pid: int | None = None) -> str:
    """host:pid:start-time of a process; the start time tells a reused pid from the original."""
    pid = os.getpid() if pid is None else pid
    return f"{socket.gethostname()}:{pid}:{_start_ticks(pid)}"


def _start_ticks(pid: int) -> str:
    try:  # Linux: field 22 of /proc/PID/stat, after the parenthesised command name
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return ""


def owner_alive(owner: str) -> bool | None:
    """Whether the process named by `owner` still runs; None when it ran on another host (then
    only the lease's expiry can tell)."""
    host, pid, ticks = owner.rsplit(":", 2)
    if host != socket.gethostname():
        return None
    if not ticks:  # no /proc where the lease was taken: the pid is all there is to go on
        return _pid_exists(int(pid))
    return _start_ticks(int(pid)) == ticks


def _pid_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


# What holds a lease, by its holder id's prefix: review decisions and recoveries hold it like a
# batch, and a refusal should not call them batches.
HOLDER_KINDS = {
    "review-": "review decision",
    "recover-": "recovery",
    "hook-": "recovery of a crashed flow run",
}


def holder_kind(holder: str) -> str:
    return next((kind for p, kind in HOLDER_KINDS.items() if holder.startswith(p)), "batch")


@dataclass(frozen=True)
class Lease:
    """The one running batch of a model: who runs it, which stage it reached, until when."""

    model: str
    batch_id: str
    owner: str
    stage: str
    acquired_at: str
    expires_at: str

    def stale(self, now: datetime | None = None) -> str:
        """Why this lease no longer protects a running batch ("" while it does)."""
        if owner_alive(self.owner) is False:
            return f"its process ({self.owner.rsplit(':', 1)[0]}) is gone"
        if datetime.fromisoformat(self.expires_at) <= (now or datetime.now(UTC)):
            return f"its lease expired at {self.expires_at}"
        return ""

    def describe(self) -> str:
        process = self.owner.rsplit(":", 1)[0]
        return (
            f"{holder_kind(self.batch_id)} {self.batch_id} of {self.model} "
            f"(process {process}, stage {self.stage}, since {self.acquired_at})"
        )
