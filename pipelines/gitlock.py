"""Git's own lock files after a `kill -9`.

Git takes `.git/index.lock` (and `HEAD.lock`, a branch's `refs/heads/<name>.lock`) by creating the
file and removes it when it finishes; a git killed in between leaves it behind, and every later
git that writes refuses with "remove the file manually to continue". A batch killed while it
committed (tests/integration/test_crash.py, "during registration") left the next run unable to
restore the data snapshot: the crash was not recoverable without a person.

So every git the pipeline runs takes the workspace's git turn first: an `fcntl` lock on
`.git/unlearn-git.lock`, which the kernel drops when its holder dies. Holding it, no other
pipeline git can be running, so a git lock file is either a person's git (which finishes in
moments) or a killed one's: one that is still there after `STALE_AFTER_S` is removed, with a
warning naming it. DVC's `add` takes the turn too (`snapshot.add_snapshot`): with autostage it
writes git's index itself. `review approve / reject` do not wait: they name the file and refuse.

The limit of that rule: a person's git that keeps its lock longer than `STALE_AFTER_S` while a
batch runs (a `git commit` waiting in an editor) would lose it. The workspace's history is the
pipeline's to write; people read it and decide through `unlearn review`.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import time
from collections.abc import Iterator
from pathlib import Path

# Far above what a git holds its lock for here (milliseconds), well below a person's patience.
STALE_AFTER_S = 10.0
_POLL_S = 0.1


def git_locks(git_dir: Path) -> list[Path]:
    """Git's lock files that a killed git may have left in `git_dir`."""
    fixed = [git_dir / "index.lock", git_dir / "HEAD.lock"]
    return [p for p in fixed if p.exists()] + sorted((git_dir / "refs" / "heads").rglob("*.lock"))


def clear_stale(git_dir: Path, stale_after: float) -> None:
    """Wait while a git lock file is younger than `stale_after` seconds; remove the ones that stay
    longer."""
    for lock in git_locks(git_dir):
        while lock.exists() and _age(lock) < stale_after:
            time.sleep(_POLL_S)
        with contextlib.suppress(FileNotFoundError):
            lock.unlink()
            logging.getLogger("unlearn").warning(
                "removed %s: a git killed mid-command left it (it stayed %.0f s with no pipeline "
                "git running)", lock, stale_after,
            )  # fmt: skip


def _age(path: Path) -> float:
    try:
        return time.time() - path.stat().st_mtime
    except FileNotFoundError:
        return 0.0


@contextlib.contextmanager
def git_turn(root: Path) -> Iterator[None]:
    """Hold the workspace's git turn for one git command (nothing to hold before `git init`)."""
    git_dir = root / ".git"
    if not git_dir.is_dir():
        yield
        return
    with open(git_dir / "unlearn-git.lock", "a") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)  # released by the kernel if this process dies
        try:
            clear_stale(git_dir, STALE_AFTER_S)
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
