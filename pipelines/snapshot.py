"""DVC data snapshots: read any version by git rev, commit and push a new one.

A snapshot is identified by its git rev; its fingerprint is the DVC directory hash of
`data/raw`, the sha256 of `dvc.lock` at that rev, and our own order-independent dataset hash of
the training split (sample ids + content hashes).
"""

from __future__ import annotations

import io
import json
import subprocess
from dataclasses import asdict, dataclass

import yaml

from components.canonical import sha256_hex
from components.data import Split, dataset_hash, load_split, save_split
from pipelines.workspace import Workspace, WorkspaceError, quiet_dvc

SPLITS = ("train", "heldout", "test")


@dataclass(frozen=True)
class SnapshotInfo:
    git_rev: str
    dvc_md5: str
    dvc_lock_sha256: str | None
    dataset_sha256: str

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class DataState:
    """Everything read from one snapshot."""

    info: SnapshotInfo
    train: Split
    heldout: Split
    test: Split
    erased: dict[str, str]                 # sample id -> batch id
    forgotten_classes: dict[str, str]      # class label (str) -> batch id
    subjects: dict[str, list[str]]


def _show(ws: Workspace, rev: str, path: str) -> str | None:
    """File content at a rev, byte-exact (None when absent)."""
    proc = subprocess.run(["git", "show", f"{rev}:{path}"], cwd=ws.root, capture_output=True)
    return proc.stdout.decode() if proc.returncode == 0 else None


def head_rev(ws: Workspace) -> str:
    return ws.git("rev-parse", "HEAD")


def read_split(ws: Workspace, rev: str, name: str) -> Split:
    import dvc.api

    try:
        with dvc.api.open(f"data/raw/{name}.npz", repo=str(ws.root), rev=rev, mode="rb") as f:
            return load_split(io.BytesIO(f.read()))
    except Exception as err:
        raise WorkspaceError(f"cannot read data/raw/{name}.npz at {rev[:10]} from DVC: {type(err).__name__}: {err}") from None


def snapshot_info(ws: Workspace, rev: str, train: Split | None = None) -> SnapshotInfo:
    rev = ws.git("rev-parse", rev)
    dvc_file = _show(ws, rev, "data/raw.dvc")
    if dvc_file is None:
        raise WorkspaceError(f"no data/raw.dvc at {rev[:10]}: not a data snapshot")
    md5 = yaml.safe_load(dvc_file)["outs"][0]["md5"]
    lock = _show(ws, rev, "dvc.lock")
    train = train if train is not None else read_split(ws, rev, "train")
    return SnapshotInfo(rev, md5, sha256_hex(lock.encode()) if lock is not None else None, dataset_hash(train))


def read_state(ws: Workspace, rev: str) -> DataState:
    rev = ws.git("rev-parse", rev)
    splits = {name: read_split(ws, rev, name) for name in SPLITS}
    tomb = json.loads(_show(ws, rev, "data/tombstones.json") or '{"erased": {}, "forgotten_classes": {}}')
    subjects = json.loads(_show(ws, rev, "data/subjects.json") or "{}")
    return DataState(snapshot_info(ws, rev, splits["train"]), splits["train"], splits["heldout"], splits["test"],
                     tomb["erased"], tomb["forgotten_classes"], subjects)


def commit_snapshot(ws: Workspace, before: DataState, train: Split, erased: dict[str, str],
                    forgotten_classes: dict[str, str], message: str) -> SnapshotInfo:
    """Write the new training split (other splits as in `before`), the tombstones, `dvc add`,
    commit and push. Returns the new snapshot's fingerprint."""
    from dvc.repo import Repo

    for name, split in (("train", train), ("heldout", before.heldout), ("test", before.test)):
        save_split(split, ws.data_dir / f"{name}.npz")
    (ws.root / "data" / "tombstones.json").write_text(
        json.dumps({"erased": dict(sorted(erased.items())), "forgotten_classes": dict(sorted(forgotten_classes.items()))}, indent=1))
    with Repo(str(ws.root)) as repo, quiet_dvc():
        repo.add(str(ws.data_dir))
        ws.git("add", "data/raw.dvc", "data/tombstones.json")
        ws.git("commit", "-q", "-m", message)
        repo.push()
    return snapshot_info(ws, "HEAD", train)


def commit_files(ws: Workspace, paths: list[str], message: str) -> str:
    """Commit audit files (certificates, alias history, dvc.lock) to the workspace's git."""
    ws.git("add", *paths)
    if ws.git("diff", "--cached", "--name-only"):
        ws.git("commit", "-q", "-m", message)
    return head_rev(ws)
