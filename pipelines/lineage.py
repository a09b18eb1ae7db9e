"""Reverse lineage: which model versions ever trained on a subject's (or a sample's) data, which
of them a certified erasure superseded, and where every alias points now."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

from components.certificate import SUBJECT_PREFIX, subject_key
from pipelines.keys import subject_secret
from pipelines.registry import Registry, data_rev
from pipelines.snapshot import git_show, read_split
from pipelines.store import RequestStore
from pipelines.workspace import Workspace, WorkspaceError

MAPPING = "data/subjects.json"


@dataclass(frozen=True)
class Exposure:
    version: str
    kind: str  # base | unlearned
    status: str
    held: int  # how many of the samples its training snapshot held (-1: unreadable)
    erased_by: str  # the first approved version whose snapshot holds none of them ("": none)
    aliases: tuple[str, ...]

    def to_dict(self) -> dict:
        return asdict(self)


def subject_samples(ws: Workspace, subject_id: str) -> tuple[str, set[str]]:
    """(keyed hash, sample ids) of a subject: the ids its requests froze at intake, and its entry
    in the data owner's mapping at HEAD or, once erased, in the mapping's history."""
    keyed = subject_key(subject_id, subject_secret())
    with RequestStore(ws.requests_db) as store:
        ids = {
            i
            for r in store.list()
            if r.request.kind == "subject" and r.request.subject_id == keyed
            for i in r.request.sample_ids
        }
    for rev in ["HEAD", *ws.git("log", "--format=%H", "--", MAPPING).split()]:
        mapping = json.loads(git_show(ws, rev, MAPPING) or "{}")
        if subject_id in mapping:
            ids |= set(mapping[subject_id])
            break
    return keyed.removeprefix(SUBJECT_PREFIX), ids


def exposures(ws: Workspace, reg: Registry, name: str, samples: set[str]) -> list[Exposure]:
    """Every registered version of `name` with how many of `samples` its snapshot held."""
    versions = reg.versions(name)
    held: dict[str, int] = {}
    for mv in versions:
        rev = data_rev(mv.tags)
        try:
            ids = set(read_split(ws, rev, "train", pixels=False).ids.tolist()) if rev else None
        except WorkspaceError:
            ids = None
        held[str(mv.version)] = -1 if ids is None else len(samples & ids)
    clean = [
        str(mv.version)
        for mv in versions
        if mv.tags.get("status") == "approved" and held[str(mv.version)] == 0
    ]
    live: dict[str, list[str]] = {}  # search results carry no aliases: the model's own do
    for alias, v in (reg.client.get_registered_model(name).aliases or {}).items():
        live.setdefault(str(v), []).append(alias)
    out = []
    for mv in versions:
        v = str(mv.version)
        later = [c for c in clean if int(c) > int(v)] if held[v] else []
        out.append(
            Exposure(
                v, mv.tags.get("kind", ""), mv.tags.get("status", ""), held[v],
                later[0] if later else "", tuple(sorted(live.get(v, ()))),
            )
        )  # fmt: skip
    return out
