"""Request intake: validate against the current snapshot, deduplicate, store as pending.

A request that fails validation is refused with one line and stored nowhere.
"""

from __future__ import annotations

import csv
import io
import json
import re
from dataclasses import dataclass
from pathlib import Path

from components.certificate import SUBJECT_PREFIX, subject_key
from components.requests import ForgetRequest, RequestError, parse_request, resolve
from pipelines.identity import whoami
from pipelines.keys import subject_secret
from pipelines.registry import ALIAS_CHAMPION, data_rev
from pipelines.snapshot import DataState, head_rev, read_state
from pipelines.store import RequestStore, StoredRequest
from pipelines.workspace import Workspace

CLIENT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,99}")


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
    except UnicodeDecodeError:
        raise RequestError(f"subject mapping {p}: not a text file (not UTF-8 JSON)") from None
    if not isinstance(raw, dict) or not all(isinstance(v, list) for v in raw.values()):
        raise RequestError(
            f"subject mapping {p}: must be a JSON object of subject id -> list of sample ids"
        )
    return {str(k): [str(i) for i in v] for k, v in raw.items()}


@dataclass
class Intake:
    """What a request is checked against: the champion's snapshot, read once."""

    state: DataState
    subjects: dict[str, list[str]]
    num_classes: int
    known: set[str]
    max_fraction: float

    @classmethod
    def of(cls, ws: Workspace, mapping: str | Path | None = None) -> Intake:
        state = current_state(ws)
        subjects = load_mapping(mapping) if mapping else state.subjects
        k = int(max(state.train.y.max(initial=0), state.test.y.max(initial=0))) + 1
        known = set(state.train.ids.tolist())
        return cls(state, subjects, k, known, ws.settings.requests.max_forget_fraction)

    def validate(self, req: ForgetRequest) -> tuple[ForgetRequest, int]:
        """(the request as stored, the number of samples it erases now); RequestError if it
        does not fit the snapshot."""
        st = self.state
        forgotten = {int(c) for c in st.forgotten_classes}
        if req.kind == "subject" and not req.sample_ids and req.subject_id not in self.subjects:
            digest = subject_key(req.subject_id or "", subject_secret())
            if (by := st.erased_subjects.get(digest.removeprefix(SUBJECT_PREFIX))) is not None:
                raise RequestError(f"subject {req.subject_id!r} was already erased by {by}")
        ids = resolve(
            req, st.train, self.num_classes, self.subjects, st.erased, forgotten, self.known
        )
        if len(ids) > self.max_fraction * len(st.train):
            raise RequestError(
                f"the request erases {len(ids)} of {len(st.train)} training samples, above "
                f"requests.max_forget_fraction={self.max_fraction}; retrain instead"
            )
        if req.kind == "subject":
            # Freeze the subject's ids into the request: the batch erases exactly what was
            # validated, whichever mapping file was used. The id itself is stored keyed only.
            keyed = subject_key(req.subject_id or "", subject_secret())
            req = parse_request({"kind": "subject", "subject_id": keyed, "sample_ids": ids})
        return req, len(ids)


def submit(
    ws: Workspace, raw: dict, mapping: str | Path | None = None
) -> tuple[StoredRequest, bool, int]:
    """Validate and store a request. Returns (stored, created, number of samples it erases now)."""
    req, n = Intake.of(ws, mapping).validate(parse_request(raw))
    with RequestStore(ws.requests_db) as store:
        stored, created = store.add(req, n, ws.settings.requests.deadline_days, whoami())
    return stored, created, n


def read_request_file(path: Path) -> list[tuple[int, dict]]:
    """(line number, raw request) from a .jsonl file (one JSON object per line) or a .csv file
    with columns id (optional), kind and target (sample ids joined by ';', a class label or a
    subject id). RequestError naming the file and line for anything unreadable."""
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as err:
        raise RequestError(f"{path}: unreadable ({err})") from None
    readers = {".jsonl": _jsonl_rows, ".csv": _csv_rows}
    if path.suffix not in readers:
        raise RequestError(f"{path}: expected a .jsonl or .csv file of requests")
    return readers[path.suffix](path, text)


def _jsonl_rows(path: Path, text: str) -> list[tuple[int, dict]]:
    rows = []
    for n, line in enumerate(text.splitlines(), 1):
        if line.strip():
            try:
                raw = json.loads(line)
            except json.JSONDecodeError as err:
                raise RequestError(f"{path}:{n}: not JSON ({err.msg})") from None
            if not isinstance(raw, dict):
                raise RequestError(f"{path}:{n}: expected a JSON object")
            rows.append((n, raw))
    return rows


def _csv_rows(path: Path, text: str) -> list[tuple[int, dict]]:
    reader = csv.DictReader(io.StringIO(text))
    if not reader.fieldnames or not {"kind", "target"} <= set(reader.fieldnames):
        raise RequestError(f"{path}: the header must name the columns kind and target (and id)")
    rows = []
    for row in reader:
        kind, target = (row.get("kind") or "").strip(), (row.get("target") or "").strip()
        field = {"samples": "sample_ids", "class": "class_label", "subject": "subject_id"}
        raw: dict = {"kind": kind, field.get(kind, "target"): target}
        if kind == "samples":
            raw["sample_ids"] = [t for t in target.split(";") if t.strip()]
        if row.get("id"):
            raw["id"] = row["id"].strip()
        rows.append((reader.line_num, raw))
    return rows


def submit_file(
    ws: Workspace, path: Path, mapping: str | Path | None = None
) -> tuple[int, int, int]:
    """Validate every request of a file against one read of the snapshot, then store them all
    in one transaction, or none: a bad line is one error naming it. A request may carry the
    client's own `id`, which makes resubmitting the file harmless. Returns (stored, already
    known, samples they erase)."""
    intake = Intake.of(ws, mapping)
    items = []
    for n, raw in read_request_file(path):
        client_id = raw.pop("id", None)
        try:
            if client_id is not None and not CLIENT_ID.fullmatch(str(client_id)):
                raise RequestError(f"request id {client_id!r}: use letters, digits and ._:-")
            req, k = intake.validate(parse_request(raw))
        except RequestError as err:
            raise RequestError(f"{path}:{n}: {err}; nothing was stored") from None
        items.append((req, k, client_id))
    with RequestStore(ws.requests_db) as store:
        try:
            done = store.add_many(items, ws.settings.requests.deadline_days, whoami())
        except ValueError as err:
            raise RequestError(f"{path}: {err}; nothing was stored") from None
    created = sum(c for _, c in done)
    return created, len(done) - created, sum(k for _, k, _ in items)
