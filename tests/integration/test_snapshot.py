"""Per-sample snapshots: a deletion batch adds only DVC's new directory listing to the cache (no
sample object), reads back exactly the old snapshot minus Df, and never commits a stray change."""

from __future__ import annotations

import numpy as np
import pytest

from pipelines.snapshot import (
    commit_files,
    commit_snapshot,
    dir_listing,
    read_split,
    read_state,
    restore_snapshot,
)
from tests.conftest import make_workspace


def _objects(ws) -> set[str]:
    cache = ws.root / ".dvc" / "cache" / "files" / "md5"
    return {p.parent.name + p.name for p in cache.rglob("*") if p.is_file()}


def test_deletion_adds_only_a_listing_and_leaves_exactly_d_minus_df(tmp_path):
    ws = make_workspace(tmp_path, train=False)
    before = read_state(ws, "HEAD")
    forget = before.train.take(np.arange(0, 60, 2))
    objects = _objects(ws)
    after = commit_snapshot(
        ws, before, forget, dict.fromkeys(forget.ids.tolist(), "b1"), {}, "erase 30"
    )
    added = _objects(ws) - objects
    assert added == {after.dvc_md5}  # the new .dir listing, and not one sample object
    new = read_state(ws, "HEAD")
    assert set(new.train.ids.tolist()) == set(before.train.ids.tolist()) - set(forget.ids.tolist())
    i, j = new.train.index_of(), before.train.index_of()
    some = new.train.ids[100]
    assert np.array_equal(new.train.x[i[some]], before.train.x[j[some]])
    assert (
        new.erased == dict.fromkeys(forget.ids.tolist(), "b1")
        and new.info.dataset_sha256 == after.dataset_sha256
    )
    assert len(dir_listing(ws, "HEAD")) == len(dir_listing(ws, "HEAD~1")) - 30


def test_restoring_removes_the_audit_copies_named_committed_or_not(tmp_path):
    """What a batch killed between writing its certificate's audit copy and committing it
    leaves: recovery removes the copy whether or not git holds it."""
    ws = make_workspace(tmp_path, train=False)
    rev = ws.git("rev-parse", "HEAD")
    before = read_state(ws, "HEAD")
    forget = before.train.take(np.arange(10))
    commit_snapshot(ws, before, forget, dict.fromkeys(forget.ids.tolist(), "b1"), {}, "b1: erase")
    folder = ws.root / "audit" / "certificates" / "m"
    folder.mkdir(parents=True)
    (folder / "v2.json").write_text("{}")
    commit_files(ws, [str(folder / "v2.json")], "b1: certificate of m/2")
    (folder / "v2.sig").write_text("never committed")
    copies = ("audit/certificates/m/v2.json", "audit/certificates/m/v2.sig")
    restore_snapshot(ws, rev, "b1", "b1: did not finish (a test); data snapshot restored", copies)
    assert not (folder / "v2.json").exists() and not (folder / "v2.sig").exists()
    assert ws.git("status", "--porcelain") == ""
    assert ws.git("diff", rev, "HEAD", "--", "data") == ""


def test_a_stray_edit_in_the_working_tree_is_not_committed(tmp_path):
    ws = make_workspace(tmp_path, train=False)
    before = read_state(ws, "HEAD")
    keep = before.train.ids[-1]
    path = ws.data_dir / "train" / str(int(before.train.y[-1])) / f"{keep}.npy"
    np.save(path, np.full_like(before.train.x[-1], 7))
    forget = before.train.take(np.arange(5))
    commit_snapshot(ws, before, forget, dict.fromkeys(forget.ids.tolist(), "b1"), {}, "erase 5")
    kept = read_split(ws, "HEAD", "train", ids={keep})
    assert np.array_equal(kept.x[0], before.train.x[-1])  # the snapshot holds the original pixels


def test_a_workspace_with_whole_split_npz_files_is_told_what_to_do(tmp_path):
    """Workspaces made before per-sample snapshots kept data/raw/{train,heldout,test}.npz."""
    import shutil

    from dvc.repo import Repo

    from pipelines.workspace import WorkspaceError

    ws = make_workspace(tmp_path, train=False)
    shutil.rmtree(ws.data_dir)
    ws.data_dir.mkdir()
    np.savez(
        ws.data_dir / "train.npz",
        x=np.zeros((2, 1, 2, 2), np.uint8),
        y=np.zeros(2),
        ids=np.array(["a", "b"]),
    )
    with Repo(str(ws.root)) as repo:
        repo.add(str(ws.data_dir))
    ws.git("add", "-A")
    ws.git("commit", "-q", "-m", "old layout")
    with pytest.raises(
        WorkspaceError, match="whole-split npz files .* create a new workspace with `unlearn init`"
    ):
        read_state(ws, "HEAD")


def test_objects_missing_from_the_cache_are_fetched_from_the_remote(tmp_path):
    ws = make_workspace(tmp_path, train=False)
    before = read_state(ws, "HEAD")
    cache = ws.root / ".dvc" / "cache" / "files" / "md5"
    gone = [p for p in cache.rglob("*") if p.is_file() and not p.name.endswith(".dir")][:5]
    for p in gone:
        p.unlink()
    after = read_state(ws, "HEAD")  # pulled back from the DVC remote
    assert (
        all(p.is_file() for p in gone) and after.info.dataset_sha256 == before.info.dataset_sha256
    )
