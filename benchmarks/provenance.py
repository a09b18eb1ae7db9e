"""Which code a bench result came from: one stamp per command that wrote it (`bench`,
`bench-time`, `bench-merge`), kept in results.json under "provenance" and shown in results.md.

A stamp names the git commit, whether the measured code (benchmarks/points.SOURCES) differed from
it, and that code's digest, the one a run's cached points are keyed on: two tables with one
digest were computed by the same code, whatever their commits. Not part of the points' digest
(this module only labels results), so adding it kept every cached point.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

from benchmarks.points import ROOT, SOURCES, code_digest
from pipelines.provenance import git_output


def stamp(command: str, root: Path = ROOT) -> dict:
    """What `command` ran on: commit (None outside git), uncommitted changes to the measured
    code (None where unknown), the code digest, and when (UTC, to the second)."""
    commit = git_output(root, "rev-parse", "HEAD")
    changes = git_output(root, "status", "--porcelain", "--", *SOURCES) if commit else None
    return {
        "command": command,
        "commit": commit,
        "uncommitted": None if changes is None else bool(changes),
        "code_digest": code_digest(root)[:16],
        "at": _now(),
    }


def stamped(result: dict, command: str, root: Path = ROOT, taken: dict | None = None) -> dict:
    """`result` with a stamp for `command` appended to its provenance. `taken`: a stamp taken
    when the command started, so that the digest and commit name the code that ran, even if the
    sources changed while it ran (a long bench); its time becomes the time of writing."""
    now = stamp(command, root) if taken is None else {**taken, "at": _now()}
    return {**result, "provenance": [*result.get("provenance", []), now]}


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def provenance_line(result: dict) -> str | None:
    """One line for results.md: each stamp's command, short commit and date; None if unstamped
    (tables written before stamps existed)."""
    stamps = result.get("provenance") or []
    if not stamps:
        return None

    def one(s: dict) -> str:
        commit = (s["commit"] or "no git")[:7]
        dirty = " with uncommitted changes to the measured code" if s["uncommitted"] else ""
        return f"`{s['command']}` at {commit}{dirty} ({s['at'][:10]}, code {s['code_digest']})"

    return "**Code**: " + "; ".join(one(s) for s in stamps) + "."
