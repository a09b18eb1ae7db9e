"""The workspace's history pushed to its git remote: at init, after each commit; a remote that is
away is a warning, and the next push carries what it missed."""

import logging
import subprocess

from pipelines.snapshot import commit_files
from tests.conftest import make_workspace


def _remote_main(origin) -> str:
    out = subprocess.run(["git", "--git-dir", str(origin), "rev-parse", "main"],
                         capture_output=True, text=True)  # fmt: skip
    return out.stdout.strip()


def test_commits_reach_the_remote_and_a_missed_push_is_caught_up(tmp_path, caplog):
    origin = tmp_path / "history.git"
    subprocess.run(["git", "init", "-q", "--bare", str(origin)], check=True)
    ws = make_workspace(tmp_path, train=False, git_remote=str(origin))
    assert _remote_main(origin) == ws.git("rev-parse", "HEAD")  # pushed at init
    origin.rename(tmp_path / "away.git")  # the remote's disk is gone for a while
    (ws.root / "audit").mkdir()
    (ws.root / "audit" / "note.txt").write_text("one\n")
    with caplog.at_level(logging.WARNING, logger="unlearn"):
        first = commit_files(ws, ["audit/note.txt"], "a note while the remote is away")
    assert "workspace history not pushed to origin" in caplog.text  # a warning, not a failure
    assert ws.git("rev-parse", "HEAD") == first
    (tmp_path / "away.git").rename(origin)
    (ws.root / "audit" / "note.txt").write_text("two\n")
    second = commit_files(ws, ["audit/note.txt"], "a second note")
    assert _remote_main(origin) == second and ws.git("rev-parse", f"{second}^") == first
    assert (
        subprocess.run(["git", "--git-dir", str(origin), "cat-file", "-e", first]).returncode == 0
    )
