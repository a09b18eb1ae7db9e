"""Request intake: validate against the current snapshot, deduplicate, store as pending.

A request that fails validation is refused with one line and stored nowhere.
"""

from __future__ import annotations

import json
from pathlib import Path

from components.requests import ForgetRequest, RequestError, parse_request, resolve
from pipelines.registry import ALIAS_CHAMPION, data_rev
from pipelines.snapshot import DataState, head_rev, read_state
from pipelines.store import RequestStore, StoredRequest
from pipelines.workspace import Workspace


def current_state(ws: Workspace, pixels: bool = False) -> DataState:
    """The snapshot the champion stands on (or HEAD before any model exists). Validating a request
    needs ids and labels only, so by default no pixel is read."""
    reg = ws.registry()
    name = ws.settings.registry.model_name
    rev = head_rev(ws)
    if reg.has_alias(name, ALIAS_CHAMPION):
        rev = data_rev(reg.champion(name).tags) or rev
    return read_state(ws, rev, pixels=pixels)


def load_mapping(path: str | Path) -> dict[str, list[str]]:
    p = Path(path)
    try:
        raw = json.loads(p.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise RequestError(f"subject mapping {p}: unreadable ({err})") from None
    if not isinstance(raw, dict) or not all(isinstance(v, list) for v in raw.values()):
        raise RequestError(
            f"subject mapping {p}: must be a JSON object of subject id -> list of sample ids"
        )
    return {str(k): [str(i) for i in v] for k, v in raw.items()}


def submit(
    ws: Workspace, raw: dict, mapping: str | Path | None = None
) -> tuple[StoredRequest, bool, int]:
    """Validate and store a request. Returns (stored, created, number of samples it erases now)."""
    req: ForgetRequest = parse_request(raw)
    state = current_state(ws)
    subjects = load_mapping(mapping) if mapping else state.subjects
    num_classes = int(max(state.train.y.max(initial=0), state.test.y.max(initial=0))) + 1
    ids = resolve(
        req,
        state.train,
        num_classes,
        subjects,
        state.erased,
        {int(c) for c in state.forgotten_classes},
    )
    if len(ids) > ws.settings.requests.max_forget_fraction * len(state.train):
        raise RequestError(
            f"the request erases {len(ids)} of {len(state.train)} training samples, above "
            f"requests.max_forget_fraction={ws.settings.requests.max_forget_fraction}; retrain "
            "instead"
        )
    if req.kind == "subject" and not req.sample_ids:
        # Freeze the subject's ids into the request: the batch erases exactly what was validated,
        # whichever mapping file was used.
        req = parse_request({"kind": "subject", "subject_id": req.subject_id, "sample_ids": ids})
    with RequestStore(ws.requests_db) as store:
        stored, created = store.add(req, len(ids), ws.settings.requests.deadline_days)
    return stored, created, len(ids)
