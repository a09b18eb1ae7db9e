"""The alias history (audit/alias_history.jsonl) as review decisions write it: each entry once,
and committed, however often a decision that stopped part-way is completed."""

from __future__ import annotations

import json

from pipelines.audit import ALIAS_LOG, append_alias_history
from pipelines.registry import ALIAS_CHAMPION
from pipelines.snapshot import commit_files
from pipelines.workspace import Workspace


def history_state(ws: Workspace, name: str, match: dict) -> str:
    """Whether the alias history holds an entry for `name` with these fields: "committed",
    "written" (in the file, but its git commit failed) or "missing"."""
    path = ws.root / ALIAS_LOG
    lines = path.read_text().splitlines() if path.is_file() else []
    entries = [json.loads(line) for line in lines if line.strip()]
    if not any(
        e.get("model") == name and all(e.get(k) == v for k, v in match.items()) for e in entries
    ):
        return "missing"
    return "written" if ws.git("status", "--porcelain", "--", ALIAS_LOG) else "committed"


def entry(
    name: str, alias: str, version: str | None, previous: str | None, actor: str, reason: str
) -> dict:
    """An alias-history entry: `alias` of model `name` moved from `previous` to `version`."""
    return {"model": name, "alias": alias, "version": version, "previous": previous,
            "actor": actor, "reason": reason}  # fmt: skip


def record_history(ws: Workspace, item: dict) -> None:
    """Append the entry unless the history has it; commit it if a failed commit left it out."""
    match = {k: item[k] for k in ("alias", "version", "previous")}
    if item["alias"] == ALIAS_CHAMPION:
        match.pop("previous")  # one approval per version, whatever it replaced
    state = history_state(ws, item["model"], match)
    if state == "missing":
        append_alias_history(ws, item)
    elif state == "written":
        commit_files(ws, [ALIAS_LOG], f"alias history: {item['reason']}")
