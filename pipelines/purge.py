"""Purge and prove: once a batch is approved, the forgotten samples' objects leave the DVC cache
and the DVC remote, so the storage forgets them as the model did.

What a batch erased is read from DVC itself: the samples listed in the snapshot before it and
not after it. An object another retained sample still uses (identical bytes) stays, and the
record says so. Each purge is appended to `audit/purges.jsonl` (committed: who, when, which
objects) and `unlearn audit verify` checks those objects are absent. Older snapshots that held
the samples keep their listings; verify reports them as purged instead of failing to read them.
A legal hold (`requests.legal_hold`) keeps the objects and records the exception. Earlier model
versions, which still carry the erased data in their weights, are archived (tagged `retired`) or
deleted (weights and registry entry) by `requests.earlier_versions`, in the same record.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from pipelines.registry import Registry, VersionRef
from pipelines.snapshot import commit_files, dir_listing
from pipelines.workspace import Workspace, utcnow

PURGE_LOG = "audit/purges.jsonl"


@dataclass(frozen=True)
class Copy:
    """One stored copy of an object: a path on one of DVC's filesystems (local, s3, ssh...)."""

    fs: Any
    path: str

    def exists(self) -> bool:
        return bool(self.fs.exists(self.path))

    def remove(self) -> None:
        self.fs.rm_file(self.path)


def object_stores(ws: Workspace) -> list[Any]:
    """Where DVC keeps the workspace's objects: its cache and its default remote (any URL DVC
    reaches: a folder, s3://, ssh://...), as DVC's own object databases. Read once per purge or
    verify: DVC's config costs milliseconds per read."""
    from dvc.config import NoRemoteError
    from dvc.repo import Repo

    with Repo(str(ws.root)) as repo:
        stores = [repo.cache.local]
        try:
            stores.append(repo.cloud.get_remote_odb())
        except NoRemoteError:
            pass
    return stores


def object_copies(stores: list[Any], md5: str) -> list[Copy]:
    """Every place an object would be kept, present or not."""
    return [Copy(odb.fs, odb.oid_to_path(md5)) for odb in stores]


def erased_objects(ws: Workspace, before_rev: str, after_rev: str) -> tuple[list[str], list[str]]:
    """(objects only the erased samples used, objects a retained sample also uses): the samples
    listed before and not after, found from the two DVC listings."""
    before, after = dir_listing(ws, before_rev), dir_listing(ws, after_rev)
    kept_paths = {e["relpath"] for e in after}
    kept_objects = {e["md5"] for e in after}
    gone = {e["md5"] for e in before if e["relpath"] not in kept_paths}
    return sorted(gone - kept_objects), sorted(gone & kept_objects)


def _archive(reg: Registry, ref: VersionRef, why: str) -> str:
    reg.set_tags(ref, {"retired": "archived", "retired_reason": why, "retired_at": utcnow()})
    return "archived"


def _delete(reg: Registry, ref: VersionRef, why: str) -> str:
    reg.delete_weights(ref)
    return "deleted"


RETIRE = {"archive": _archive, "delete": _delete}


def retire_earlier(reg: Registry, name: str, version: str, policy: str, hold: bool) -> list[dict]:
    """Versions registered before `version` carry what it erased: archive or delete them by
    policy (none under `keep` or a legal hold, nor any already retired). What was done to each."""
    if policy == "keep" or hold:
        return []
    why = f"carries data erased by {name}/{version}"
    done = []
    for mv in reg.versions(name):
        if int(mv.version) < int(version) and not mv.tags.get("retired"):
            action = RETIRE[policy](reg, VersionRef(name, str(mv.version)), why)
            done.append({"version": str(mv.version), "action": action})
    return done


def purge(ws: Workspace, reg: Registry, name: str, version: str, actor: str) -> dict:
    """Remove the objects of the samples version `version` erased, retire the earlier versions
    by policy; record both. Idempotent."""
    tags = reg.resolve(name, version).tags
    objects, shared = erased_objects(ws, tags["data.before_rev"], tags["data.after_rev"])
    hold = ws.settings.requests.legal_hold
    policy = ws.settings.requests.earlier_versions
    removed, stores = 0, object_stores(ws)
    if not hold:
        for md5 in objects:
            for copy in object_copies(stores, md5):
                if copy.exists():
                    copy.remove()
                    removed += 1
    record = {
        "at": utcnow(), "actor": actor, "model": name, "version": version,
        "batch_id": tags.get("batch_id", ""), "objects": objects, "kept_shared": shared,
        "files_removed": removed, "legal_hold": hold, "earlier_versions_policy": policy,
        "earlier_versions": retire_earlier(reg, name, version, policy, hold),
    }  # fmt: skip
    path = ws.root / PURGE_LOG
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        f.write(json.dumps(record, sort_keys=True) + "\n")
    what = "kept under legal hold" if hold else f"purged ({removed} files)"
    commit_files(ws, [PURGE_LOG], f"{name}/{version}: {len(objects)} erased objects {what}")
    return record


def purge_records(ws: Workspace) -> list[dict]:
    path = ws.root / PURGE_LOG
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def purged_objects(ws: Workspace) -> dict[str, str]:
    """object md5 -> the version whose purge removed it (legal holds excluded)."""
    return {
        md5: f"{r['model']}/{r['version']}"
        for r in purge_records(ws)
        if not r["legal_hold"]
        for md5 in r["objects"]
    }


def deleted_versions(ws: Workspace) -> dict[tuple[str, str], dict]:
    """(model, version) -> the purge record whose policy deleted that version."""
    return {
        (r["model"], e["version"]): r
        for r in purge_records(ws)
        for e in r.get("earlier_versions", [])
        if e["action"] == "deleted"
    }


def deletion_note(record: dict) -> str:
    return (
        f"deleted by the purge after {record['model']}/{record['version']} ({record['at']}, "
        f"{record['actor']}; {PURGE_LOG}): its weights carried erased data"
    )
