"""DVC data snapshots, one file per sample: read any version by git rev, commit and push a new one.

Layout: `data/raw/<split>/<label>/<sample id>.npy` (uint8 C x H x W), tracked as one DVC directory.
DVC stores each file once, by content, so a deletion batch adds only the new directory listing
(`.dir`, about 75 bytes per remaining sample) to the cache and the remote: the samples that stay
are the same objects. A whole-dataset file would be rewritten on every batch (CIFAR-10: 150 MB).

Reading goes through the DVC cache directly: the `.dir` listing at a rev names every sample's
object, so ids and labels come without reading a pixel, and pixels only for the samples asked.

A snapshot is identified by its git rev; its fingerprint is the DVC directory hash of
`data/raw`, the sha256 of `dvc.lock` at that rev, and our own order-independent dataset hash of
the training split (sample ids + content hashes).
"""

from __future__ import annotations

import json
import subprocess
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import yaml

from components.canonical import sha256_hex
from components.data import Split, dataset_hash, sample_relpath
from pipelines.gitlock import git_turn
from pipelines.workspace import Workspace, WorkspaceError, quiet_dvc

SPLITS = ("train", "heldout", "test")
RAW = "data/raw"


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

    info: SnapshotInfo | None  # None when read without pixels (ids and labels only)
    train: Split
    heldout: Split
    test: Split
    erased: dict[str, str]  # sample id -> batch id
    forgotten_classes: dict[str, str]  # class label (str) -> batch id
    subjects: dict[str, list[str]]  # the data owner's mapping: erased subjects leave it
    erased_subjects: dict[str, str] = field(default_factory=dict)  # keyed subject id -> batch id


@dataclass(frozen=True)
class Listing:
    """One split of a snapshot as DVC lists it: ids, labels and each sample's cache object."""

    ids: np.ndarray  # (N,) str, sorted
    labels: np.ndarray  # (N,) int64
    objects: tuple[Path, ...]


def git_show(ws: Workspace, rev: str, path: str) -> str | None:
    """File content at a rev, byte-exact (None when absent)."""
    proc = subprocess.run(["git", "show", f"{rev}:{path}"], cwd=ws.root, capture_output=True)
    return proc.stdout.decode() if proc.returncode == 0 else None


def head_rev(ws: Workspace) -> str:
    return ws.git("rev-parse", "HEAD")


def dir_md5(ws: Workspace, rev: str) -> str:
    dvc_file = git_show(ws, rev, f"{RAW}.dvc")
    if dvc_file is None:
        raise WorkspaceError(f"no {RAW}.dvc at {rev[:10]}: not a data snapshot")
    return yaml.safe_load(dvc_file)["outs"][0]["md5"]


def object_path(ws: Workspace, md5: str) -> Path:
    """Where DVC 3 keeps an object in the local cache (`.dvc/cache/files/md5/ab/cdef...`)."""
    return ws.root / ".dvc" / "cache" / "files" / "md5" / md5[:2] / md5[2:]


def _fetch(ws: Workspace, rev: str) -> None:
    """Bring a snapshot's objects from the DVC remote into the cache (fresh clone, pruned cache)."""
    from dvc.repo import Repo

    try:
        with Repo(str(ws.root)) as repo, quiet_dvc():
            repo.fetch(targets=[RAW], revs=[rev])
    except Exception as err:  # dvc raises its own many kinds; the message is what matters here
        raise WorkspaceError(
            f"cannot fetch {RAW} at {rev[:10]} from the DVC remote: {type(err).__name__}: {err}"
        ) from None


def dir_listing(ws: Workspace, rev: str) -> list[dict]:
    """The `.dir` object of `data/raw` at a rev: [{"md5", "relpath"}, ...] sorted by relpath."""
    md5 = dir_md5(ws, rev)
    path = object_path(ws, md5)  # md5 ends in ".dir", as the object's file name does
    if not path.is_file():
        _fetch(ws, rev)
    try:
        entries = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise WorkspaceError(f"DVC listing of {RAW} at {rev[:10]} unreadable: {err}") from None
    if any(e["relpath"] in ("train.npz", "test.npz") for e in entries):
        raise WorkspaceError(
            f"{RAW} at {rev[:10]} holds whole-split npz files (a workspace made before per-sample "
            "snapshots); create a new workspace with `unlearn init` and import the model into it"
        )
    return entries


def listing(ws: Workspace, rev: str, split: str, entries: list[dict] | None = None) -> Listing:
    entries = entries if entries is not None else dir_listing(ws, rev)
    rows = []
    prefix = split + "/"
    for e in entries:
        rel = e["relpath"]
        if rel.startswith(prefix) and rel.endswith(".npy"):
            label, _, sid = rel[len(prefix) :].partition("/")
            rows.append((sid[:-4], int(label), e["md5"]))
    rows.sort()
    return Listing(
        np.array([r[0] for r in rows], dtype=str),
        np.array([r[1] for r in rows], dtype=np.int64),
        tuple(object_path(ws, r[2]) for r in rows),
    )


def _load_pixels(lst: Listing, ws: Workspace, rev: str) -> np.ndarray:
    """All images of a listing into one preallocated array (no second copy of the split)."""
    if not lst.objects:
        return np.zeros((0, 1, 1, 1), dtype=np.uint8)
    if not all(p.is_file() for p in lst.objects):  # a fresh clone or a pruned cache
        _fetch(ws, rev)
    try:
        first = np.load(lst.objects[0], allow_pickle=False)
        x = np.empty((len(lst.objects), *first.shape), dtype=np.uint8)
        raw = lst.objects[0].read_bytes()
        header = raw[: len(raw) - first.nbytes]  # .npy header: magic, dtype, shape, padding
        for i, p in enumerate(lst.objects):
            raw = p.read_bytes()
            # Same header bytes = same dtype, shape and order: the pixels are the tail. Parsing
            # the header 50,000 times was most of a CIFAR-10 read; anything else goes to numpy.
            if len(raw) == len(header) + first.nbytes and raw.startswith(header):
                x[i] = np.frombuffer(raw, np.uint8, first.nbytes, len(header)).reshape(first.shape)
            else:
                x[i] = np.load(p, allow_pickle=False)
    except (OSError, ValueError) as err:  # still missing after the fetch, or not an .npy
        raise WorkspaceError(
            f"a sample object of {RAW} at {rev[:10]} is unreadable: {err}"
        ) from None
    return x


def index_only(labels: np.ndarray, ids: np.ndarray) -> Split:
    """A split whose ids and labels are real but whose pixels were not read (a zero-stride view
    of one blank pixel, no memory): what request intake needs, in a fraction of the time."""
    return Split(
        np.broadcast_to(np.zeros((1, 1, 1, 1), dtype=np.uint8), (len(labels), 1, 1, 1)), labels, ids
    )


def read_split(
    ws: Workspace,
    rev: str,
    name: str,
    ids: set[str] | None = None,
    pixels: bool = True,
    entries: list[dict] | None = None,
) -> Split:
    """One split at a rev (only the samples in `ids` when given)."""
    lst = listing(ws, rev, name, entries)
    if ids is not None:
        keep = np.isin(lst.ids, np.array(sorted(ids), dtype=str))
        lst = Listing(
            lst.ids[keep],
            lst.labels[keep],
            tuple(p for p, k in zip(lst.objects, keep, strict=True) if k),
        )
    if not pixels:
        return index_only(lst.labels, lst.ids)
    return Split(_load_pixels(lst, ws, rev), lst.labels, lst.ids)


def snapshot_info(ws: Workspace, rev: str, train: Split | None = None) -> SnapshotInfo:
    rev = ws.git("rev-parse", rev)
    md5 = dir_md5(ws, rev)
    lock = git_show(ws, rev, "dvc.lock")
    train = train if train is not None else read_split(ws, rev, "train")
    return SnapshotInfo(
        rev, md5, sha256_hex(lock.encode()) if lock is not None else None, dataset_hash(train)
    )


def read_state(ws: Workspace, rev: str, pixels: bool = True) -> DataState:
    """A snapshot's splits, tombstones and subject mapping. Without pixels: ids and labels only,
    and no fingerprint (which hashes the pixels)."""
    rev = ws.git("rev-parse", rev)
    entries = dir_listing(ws, rev)
    splits = {name: read_split(ws, rev, name, pixels=pixels, entries=entries) for name in SPLITS}
    tomb = json.loads(
        git_show(ws, rev, "data/tombstones.json") or '{"erased": {}, "forgotten_classes": {}}'
    )
    subjects = json.loads(git_show(ws, rev, "data/subjects.json") or "{}")
    info = snapshot_info(ws, rev, splits["train"]) if pixels else None
    return DataState(
        info,
        splits["train"],
        splits["heldout"],
        splits["test"],
        tomb["erased"],
        tomb["forgotten_classes"],
        subjects,
        tomb.get("subjects", {}),
    )


def _restore_working_tree(ws: Workspace, rev: str, force: bool = False) -> None:
    """Make data/raw hold exactly the snapshot at `rev` (HEAD may hold a rejected batch's). When
    HEAD already records that snapshot, the DVC checkout (a pass over every file) is skipped:
    commit_snapshot's listing check catches any stray change and comes back with force."""
    from dvc.repo import Repo

    same = (git_show(ws, "HEAD", f"{RAW}.dvc") or "") == (git_show(ws, rev, f"{RAW}.dvc") or "")
    if same and not force:
        return
    ws.git("checkout", rev, "--", f"{RAW}.dvc")
    with Repo(str(ws.root)) as repo, quiet_dvc():
        repo.checkout(targets=[str(ws.data_dir)], force=True)


def restore_snapshot(
    ws: Workspace, rev: str, batch_id: str, message: str, also_remove: tuple[str, ...] = ()
) -> str:
    """Put the data snapshot of `rev` back at HEAD after batch `batch_id` stopped part-way: when
    its snapshot commit is the latest, or its erasure left the working tree changed. Files in
    `also_remove` (e.g. the audit copy of a version that was removed) go in the same commit.
    Returns the new commit, or "" when HEAD already held that snapshot."""
    last = ws.git("log", "-1", "--format=%s", "--", f"{RAW}.dvc")
    dirty = bool(ws.git("status", "--porcelain", "--", "data"))
    if not last.startswith(f"{batch_id}:") and not dirty and not also_remove:
        return ""
    _restore_working_tree(ws, rev, force=True)
    ws.git("checkout", rev, "--", "data/tombstones.json")
    for path in also_remove:
        ws.git("rm", "-q", "--ignore-unmatch", "--", path)
        # A copy written but never committed (a kill between the two): git rm leaves it, and an
        # untracked file in audit/ fails every later `audit verify` (workspace records).
        (ws.root / path).unlink(missing_ok=True)
    if not ws.git("status", "--porcelain", "--", "data", *also_remove):
        return ""
    ws.git("add", f"{RAW}.dvc", "data/tombstones.json")
    ws.git("commit", "-q", "-m", message)
    ws.push_history()
    return head_rev(ws)


def commit_snapshot(
    ws: Workspace,
    before: DataState,
    forget: Split,
    erased: dict[str, str],
    forgotten_classes: dict[str, str],
    message: str,
    erased_subjects: dict[str, str] | None = None,
) -> SnapshotInfo:
    """Remove Df's files from the pinned snapshot, write the tombstones, `dvc add`, commit, push.

    The new listing is checked to be exactly the old one minus Df (same objects for every sample
    that stays) before anything is committed; otherwise the working tree is put back and nothing
    is recorded. Returns the new snapshot's fingerprint.
    """
    from dvc.repo import Repo

    if before.info is None:
        raise WorkspaceError(
            "commit_snapshot needs the pinned snapshot read with its pixels (its fingerprint)"
        )
    rev = before.info.git_rev
    old = dir_listing(ws, rev)
    gone = {
        sample_relpath("train", y, sid)
        for y, sid in zip(forget.y.tolist(), forget.ids.tolist(), strict=True)
    }
    expected = [e for e in old if e["relpath"] not in gone]
    for force in (False, True):
        _restore_working_tree(ws, rev, force)
        if _erase_and_add(ws, gone) == expected:
            break
        ws.git("checkout", "HEAD", "--", f"{RAW}.dvc")
    else:
        _restore_working_tree(ws, "HEAD", force=True)
        raise WorkspaceError(
            f"{RAW} does not match its snapshot at {rev[:10]} minus Df; nothing was committed"
        )
    subjects = {**before.erased_subjects, **(erased_subjects or {})}
    (ws.root / "data" / "tombstones.json").write_text(
        json.dumps(
            {
                "erased": dict(sorted(erased.items())),
                "forgotten_classes": dict(sorted(forgotten_classes.items())),
                **({"subjects": dict(sorted(subjects.items()))} if subjects else {}),
            },
            indent=1,
        )
    )
    # A subject whose every sample is erased leaves the mapping: its id stays in clear only in
    # the mapping's history, the data owner's record; the tombstone holds its keyed hash.
    mapping = {k: v for k, v in before.subjects.items() if not set(v) <= erased.keys()}
    if mapping != before.subjects:
        (ws.root / "data" / "subjects.json").write_text(json.dumps(mapping, indent=1))
    ws.git("add", f"{RAW}.dvc", "data/tombstones.json", "data/subjects.json")
    ws.git("commit", "-q", "-m", message)
    try:
        with Repo(str(ws.root)) as repo, quiet_dvc():
            repo.push(targets=[str(ws.data_dir)])
    except Exception as err:  # DVC's own errors and plain OSErrors from a local remote alike
        raise WorkspaceError(f"pushing the data snapshot to the DVC remote failed: {err}") from None
    ws.push_history()  # after the DVC push: the remote's commit never names missing objects
    train = before.train.take(~np.isin(before.train.ids, forget.ids))
    return snapshot_info(ws, "HEAD", train)


def _erase_and_add(ws: Workspace, gone: set[str]) -> list[dict]:
    """Delete the forgotten samples' files, `dvc add` the folder; returns the new listing."""
    for rel in gone:
        (ws.data_dir / rel).unlink(missing_ok=True)
    add_snapshot(ws)
    new_md5 = yaml.safe_load((ws.root / f"{RAW}.dvc").read_text())["outs"][0]["md5"]
    return json.loads(object_path(ws, new_md5).read_text())


def add_snapshot(ws: Workspace) -> None:
    """`dvc add data/raw`, in the workspace's git turn: with `core.autostage` DVC stages
    `data/raw.dvc` itself, writing git's index through `index.lock` (dulwich), so it is a git
    write like the pipeline's own. Outside the turn a lock a killed git left stopped it
    ("FileLocked"), and it could meet another pipeline git's lock mid-command."""
    from dvc.repo import Repo

    with git_turn(ws.root), Repo(str(ws.root)) as repo, quiet_dvc():
        # relink=False: the files that stay are already what the cache holds; relinking would
        # re-check every one of them (1.5 s of 45,000 files measured).
        repo.add(str(ws.data_dir), relink=False)


def commit_files(ws: Workspace, paths: list[str], message: str) -> str:
    """Commit audit files (certificates, alias history, dvc.lock) to the workspace's git."""
    ws.git("add", *paths)
    if ws.git("diff", "--cached", "--name-only", "--", *paths):
        # `-- paths`: only these files; whatever else a person staged stays staged, uncommitted.
        ws.git("commit", "-q", "-m", message, "--", *paths)
    ws.push_history()
    return head_rev(ws)
