"""Which code a bench result came from: one stamp per command that wrote it (`bench`,
`bench-time`, `bench-merge`), kept in results.json under "provenance" and shown in results.md.

A stamp names the git commit, whether the measured code (benchmarks/points.SOURCES) differed from
it, and that code's digest, the one a run's cached points are keyed on: two tables with one
digest were computed by the same code, whatever their commits. Not part of the points' digest
(this module only labels results), so adding it kept every cached point. Since 2026-12-06 a stamp
also names the machine: seconds and their ratios depend on it, and bf16 runs natively only on a
CPU with AVX512-BF16 / AMX (or a GPU).
"""

from __future__ import annotations

import os
import platform
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
        "machine": machine(),
    }


def machine() -> dict:
    """The hardware and torch a command ran on (what its seconds depend on)."""
    import torch  # here, not above: the CLI imports this module, and most commands need no torch

    from components.runtime import bf16_cpu_supported

    return {
        "cpu": _cpu_model(),
        "cpus": os.cpu_count(),
        "bf16_units": bf16_cpu_supported(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "torch": torch.__version__,
    }


def _cpu_model(cpuinfo: Path = Path("/proc/cpuinfo")) -> str:
    """The CPU's model name (Linux's /proc/cpuinfo; elsewhere what `platform` knows)."""
    if cpuinfo.is_file():
        for line in cpuinfo.read_text(errors="replace").splitlines():
            key, _, value = line.partition(":")
            if key.strip() == "model name" and value.strip():
                return value.strip()
    return platform.processor() or platform.machine() or "unknown"


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
        dirty = " with uncommitted changes to the measured code" if s["uncommitted"] else ""
        return f"{_run(s)}{dirty} ({s['at'][:10]}, code {s['code_digest']})"

    return "**Code**: " + "; ".join(one(s) for s in stamps) + "."


def machine_line(result: dict) -> str | None:
    """One line for results.md: each machine the stamps name, with the commands (and commits)
    run on it, and how many stamps name none; None if no stamp names one (tables stamped before
    bfc1a7d, 2026-12-06, render as they did)."""
    stamps = result.get("provenance") or []
    on: dict[str, list[str]] = {}
    for s in (s for s in stamps if s.get("machine")):
        runs, run = on.setdefault(_machine_text(s["machine"]), []), _run(s)
        if run not in runs:
            runs.append(run)
    if not on:
        return None
    parts = [f"{text} ({', '.join(runs)})" for text, runs in on.items()]
    unnamed = sum(1 for s in stamps if not s.get("machine"))
    rest = f"; not recorded by the other {unnamed} stamps (older)" if unnamed else ""
    return "**Machine**: " + "; ".join(parts) + rest + "."


def _run(s: dict) -> str:
    return f"`{s['command']}` at {(s['commit'] or 'no git')[:7]}"


def _machine_text(m: dict) -> str:
    units = "bf16 units" if m["bf16_units"] else "no bf16 units (AVX512-BF16 / AMX)"
    gpu = f", {m['gpu']}" if m["gpu"] else ""
    return f"{m['cpu']}, {m['cpus']} CPUs, {units}{gpu}, torch {m['torch']}"
