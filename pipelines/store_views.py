"""How stored requests are filtered and shown by `unlearn request list` (table and --json)."""

from __future__ import annotations

import json
from datetime import datetime, timedelta

from pipelines.store import StoredRequest, _now

DURATION_UNITS = {"d": "days", "h": "hours", "m": "minutes"}


def due_filter(overdue: bool, due_within: str | None, now: datetime | None = None) -> str | None:
    """The ISO time a request's deadline must fall before to be listed (None: no filter)."""
    now = now or _now()
    if overdue and due_within:
        raise ValueError("give --overdue or --due-within, not both")
    if overdue:
        return now.isoformat()
    if due_within is None:
        return None
    amount, unit = due_within[:-1], due_within[-1:]
    if not amount.isdigit() or unit not in DURATION_UNITS:
        raise ValueError(f"--due-within {due_within!r}: expected a number and d, h or m (e.g. 7d)")
    return (now + timedelta(**{DURATION_UNITS[unit]: int(amount)})).isoformat()


def payload_summary(r: StoredRequest) -> str:
    req = r.request
    if req.kind == "class":
        return f"class {req.class_label}"
    if req.kind == "subject":
        return f"subject {req.subject_id}"
    ids = list(req.sample_ids)
    return ", ".join(ids[:3]) + (f" (+{len(ids) - 3})" if len(ids) > 3 else "")


def to_json(r: StoredRequest) -> str:
    return json.dumps(
        {"id": r.id, "kind": r.kind, "status": r.status, "reason": r.reason, "deadline": r.deadline}
    )
