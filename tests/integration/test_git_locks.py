"""A git killed mid-command leaves `.git/index.lock`, and every later git that writes refuses
("remove the file manually to continue"): a batch killed while it committed left the next run
unable to recover (tests/integration/test_crash.py). `pipelines/gitlock.py` gives each pipeline git
the workspace's turn and clears a lock file that outlives a git. Real git throughout."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import threading
import time

import pytest

from pipelines import gitlock
from pipelines.snapshot import add_snapshot
from pipelines.workspace import Workspace, WorkspaceError, quiet_dvc


@pytest.fixture
def ws(tmp_path):
    w = Workspace(tmp_path / "ws")
    w.root.mkdir()
    w.git("init", "-q")
    w.git("config", "user.email", "t@example.org")
    w.git("config", "user.name", "t")
    return w


def _change(ws: Workspace, name: str) -> None:
    (ws.root / name).write_text(name)


def _stale(lock) -> None:
    """The lock file a git killed between taking and dropping its lock leaves."""
    lock.write_text("")
    old = time.time() - 3600
    os.utime(lock, (old, old))


def test_a_lock_a_killed_git_left_is_removed_and_the_commit_goes_through(ws, caplog):
    lock = ws.root / ".git" / "index.lock"
    _stale(lock)
    _change(ws, "a")
    with caplog.at_level(logging.WARNING, logger="unlearn"):
        ws.git("add", "a")
        ws.git("commit", "-q", "-m", "a")
    assert not lock.exists() and ws.git("log", "--format=%s") == "a"
    assert "index.lock: a git killed mid-command left it" in caplog.text


def test_without_the_turn_git_itself_refuses(ws):
    """What the pipeline met before: the same stale lock, git run directly."""
    (ws.root / ".git" / "index.lock").write_text("")
    _change(ws, "a")
    proc = subprocess.run(["git", "add", "a"], cwd=ws.root, capture_output=True, text=True)
    assert proc.returncode != 0 and "remove the file manually" in proc.stderr


def test_a_young_lock_is_waited_for_and_left_to_its_git(ws, caplog, monkeypatch):
    """A person's git holds its lock for moments: the pipeline waits for it, removes nothing."""
    monkeypatch.setattr(gitlock, "STALE_AFTER_S", 30.0)
    lock = ws.root / ".git" / "index.lock"
    lock.write_text("")
    threading.Timer(0.5, lock.unlink).start()  # that git finishing
    _change(ws, "a")
    with caplog.at_level(logging.WARNING, logger="unlearn"):
        ws.git("add", "a")
    assert "killed mid-command" not in caplog.text
    assert ws.git("diff", "--cached", "--name-only") == "a"


def test_a_fresh_lock_that_stays_is_removed_once_stale(ws, caplog, monkeypatch):
    monkeypatch.setattr(gitlock, "STALE_AFTER_S", 0.5)
    lock = ws.root / ".git" / "refs" / "heads" / "main.lock"
    lock.write_text("")
    _change(ws, "a")
    with caplog.at_level(logging.WARNING, logger="unlearn"):
        ws.git("add", "a")
    assert not lock.exists() and "main.lock: a git killed mid-command" in caplog.text


HOLD = """
import fcntl, sys, time
with open(sys.argv[1], "a") as fh:
    fcntl.flock(fh, fcntl.LOCK_EX)
    print("held", flush=True)
    time.sleep(1.0)
    open(sys.argv[2], "w").write("released")
"""


def test_a_pipeline_git_waits_for_another_processes_turn(ws, tmp_path):
    done = tmp_path / "released"
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(ws.root / ".git" / "unlearn-git.lock"), str(done)],
        stdout=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert holder.stdout.readline().strip() == "held"
    _change(ws, "a")
    ws.git("add", "a")  # only once the other process's turn is over
    assert done.exists()
    holder.wait(timeout=30)


def test_a_failed_git_still_says_why_in_one_line(ws):
    with pytest.raises(WorkspaceError, match="git checkout nope -- x failed: "):
        ws.git("checkout", "nope", "--", "x")


def test_dvc_staging_its_file_takes_the_turn_too(ws):
    """With `core.autostage` DVC's add writes git's index itself (dulwich, through index.lock);
    outside the turn the same stale lock stopped it with "FileLocked"."""
    from dvc.repo import Repo

    with quiet_dvc():
        Repo.init(str(ws.root)).close()
    ws.git("config", "-f", ".dvc/config", "core.autostage", "true")
    ws.data_dir.mkdir(parents=True)
    (ws.data_dir / "a").write_text("a")
    lock = ws.root / ".git" / "index.lock"
    _stale(lock)
    add_snapshot(ws)
    assert not lock.exists()
    assert "data/raw.dvc" in ws.git("diff", "--cached", "--name-only").splitlines()
