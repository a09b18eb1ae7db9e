"""Aliases on record: every move of `champion` the pipeline makes is appended to the alias
history (audit/alias_history.jsonl, committed); `unlearn audit aliases` replays that history
and compares it with where MLflow's aliases point now, so an alias moved by hand in the MLflow
UI or API, or one on a version whose certificate does not verify, is named."""

from __future__ import annotations

import json
from dataclasses import dataclass

from pipelines.audit import ALIAS_LOG, append_alias_history, verify
from pipelines.registry import ALIAS_CANDIDATE, ALIAS_CHAMPION, Registry, VersionRef
from pipelines.workspace import Workspace


def champion_from(ws: Workspace, reg: Registry, ref: VersionRef, actor: str) -> None:
    """Make a new base version champion, on record."""
    previous = reg.champion(ref.name).version if reg.has_alias(ref.name, ALIAS_CHAMPION) else None
    reg.set_alias(ref, ALIAS_CHAMPION)
    append_alias_history(
        ws,
        {"model": ref.name, "alias": ALIAS_CHAMPION, "version": ref.version,
         "previous": previous, "actor": actor, "reason": "base model registered"},
    )  # fmt: skip


@dataclass(frozen=True)
class AliasFinding:
    alias: str
    live: str | None  # where MLflow points it now
    expected: str | None  # where the history (or, for candidate, the pending batch) says
    ok: bool
    detail: str


def replay(ws: Workspace, name: str) -> dict[str, str | None]:
    """alias -> version, as the alias history leaves them (None: dropped)."""
    path = ws.root / ALIAS_LOG
    state: dict[str, str | None] = {}
    lines = path.read_text().splitlines() if path.is_file() else []
    for e in (json.loads(x) for x in lines if x.strip()):
        if e.get("model") == name:
            state[e["alias"]] = e.get("version")
    return state


def check_aliases(ws: Workspace, reg: Registry, name: str) -> list[AliasFinding]:
    """Each alias MLflow holds for `name`, and each the history expects, with a verdict."""
    live = {a: str(v) for a, v in reg.client.get_registered_model(name).aliases.items()}
    expected = replay(ws, name)
    findings = []
    for alias in sorted(set(live) | {a for a, v in expected.items() if v}):
        now, want = live.get(alias), expected.get(alias)
        if alias == ALIAS_CANDIDATE:  # set by a batch, not a decision: its certificate decides
            want = now
        if now != want:
            why = f"the history says {want or 'nowhere'}; moved outside unlearn?"
            findings.append(AliasFinding(alias, now, want, False, why))
            continue
        report = verify(ws, reg, name, now) if now else None
        ok = report is None or report.ok
        detail = "as on record" if ok else "; ".join(report.problems)
        findings.append(AliasFinding(alias, now, want, ok, detail))
    return findings
