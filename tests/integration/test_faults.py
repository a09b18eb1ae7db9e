"""Faults of the stores and the machine through the real CLI: damaged request and MLflow stores, a
binary params or mapping file, an unreachable PostgreSQL server, a read-only workspace and a full
disk. Each is one `error:` line naming the file or store, exit code 2, no traceback, and nothing
in the workspace changed by the attempt."""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from pipelines.cli import main
from pipelines.store import RequestStore
from tests.conftest import ROOT, make_workspace


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    """A trained workspace with one pending request: the state every fault starts from."""
    ws = make_workspace(tmp_path_factory.mktemp("faults"))
    assert main(["-w", str(ws.root), "request", "submit", "--class", "3"]) == 0
    return ws.root


@pytest.fixture()
def ws_copy(template, tmp_path) -> Path:
    root = tmp_path / "ws"
    shutil.copytree(template, root, symlinks=True)
    return root


def _fingerprint(root: Path) -> dict[str, str]:
    """Every file's hash (git objects and DVC cache included): "nothing changed" means this."""
    return {
        str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(root.rglob("*"))
        if p.is_file() and not p.name.endswith(("-shm", "-wal"))
    }


def _assert_one_line(code: int, err: str, needle: str) -> None:
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert code == 2, err
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert needle in lines[0], err
    assert "Traceback" not in err


def _garble(path: Path) -> None:
    path.write_bytes(os.urandom(20_000))


def _truncate(path: Path) -> None:
    with path.open("r+b") as f:
        f.truncate(path.stat().st_size // 9)


def _binary(path: Path) -> None:
    path.write_bytes(bytes(range(256)) * 8)


DAMAGE = {
    "requests.db corrupt": (".unlearn/requests.db", _garble, "is not an sqlite database"),
    "requests.db truncated": (".unlearn/requests.db", _truncate, "is damaged"),
    "mlflow.db corrupt": ("mlflow.db", _garble, "file is not a database"),
    "mlflow.db truncated": ("mlflow.db", _truncate, "malformed"),
    "params.yaml binary": ("params.yaml", _binary, "not a text file"),
}
COMMANDS = {
    "request submit": ["request", "submit", "--class", "5"],
    "request list": ["request", "list"],
    "batch run": ["batch", "run"],
    "train": ["train", "--replace-champion"],
    "review approve": ["review", "approve", "digits-cnn", "2", "--reviewer", "r"],
}
# (damage, command): every command that reads the damaged file.
CASES = [
    (kind, cmd)
    for kind in DAMAGE
    for cmd in COMMANDS
    # a list reads neither a model nor the params
    if not (kind.startswith(("mlflow", "params")) and cmd == "request list")
    and not (kind.startswith("requests") and cmd in ("train", "review approve"))
]


@pytest.mark.parametrize("kind, cmd", CASES, ids=[f"{k}: {c}" for k, c in CASES])
def test_a_damaged_store_or_params_file_is_one_line_naming_it(ws_copy, capsys, kind, cmd):
    rel, damage, needle = DAMAGE[kind]
    damage(ws_copy / rel)
    before = _fingerprint(ws_copy)
    code = main(["-w", str(ws_copy), *COMMANDS[cmd]])
    err = capsys.readouterr().err
    _assert_one_line(code, err, needle)
    assert Path(rel).name in err
    assert _fingerprint(ws_copy) == before


def test_a_binary_subject_mapping_is_one_line(ws_copy, capsys, tmp_path):
    mapping = tmp_path / "subjects.json"
    _binary(mapping)
    code = main(
        ["-w", str(ws_copy), "request", "submit", "--subject", "s1", "--mapping", str(mapping)]
    )
    _assert_one_line(code, capsys.readouterr().err, "not a text file")
    with RequestStore(ws_copy / ".unlearn/requests.db") as store:
        assert len(store.list()) == 1


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("cmd", ["request submit", "batch run", "train", "review approve"])
def test_an_unreachable_postgresql_tracking_store_is_one_line(ws_copy, capsys, monkeypatch, cmd):
    uri = f"postgresql://unlearn:secret@127.0.0.1:{_closed_port()}/mlflow"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    before = _fingerprint(ws_copy)
    code = main(["-w", str(ws_copy), *COMMANDS[cmd]])
    err = capsys.readouterr().err
    _assert_one_line(code, err, "postgresql://unlearn:***@127.0.0.1")
    assert "secret" not in err and "Connection refused" in err
    assert _fingerprint(ws_copy) == before


# --- a read-only workspace and a full disk: real mounts in a private mount namespace ----------


def _can_mount() -> bool:
    probe = "d=$(mktemp -d) && mount -t tmpfs -o size=1m tmpfs $d && umount $d && rmdir $d"
    try:
        return (
            subprocess.run(["unshare", "-m", "sh", "-c", probe], capture_output=True).returncode
            == 0
        )
    except FileNotFoundError:
        return False


mounts = pytest.mark.skipif(
    not _can_mount(), reason="needs mount namespaces (root or CAP_SYS_ADMIN)"
)


def _cli_in_namespace(setup: str, root: Path, args: list[str]) -> subprocess.CompletedProcess:
    """`setup` (shell, sees $W) prepares the mounts, then the CLI runs in the workspace; the
    mounts vanish with the namespace."""
    cli = " ".join([sys.executable, "-m", "pipelines.cli", *args])
    env = {**os.environ, "PYTHONPATH": str(ROOT), "W": str(root)}
    return subprocess.run(
        ["unshare", "-m", "bash", "-c", f"set -e; {setup}; cd $W; {cli}"],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )


READ_ONLY = "mount --bind $W $W; mount -o remount,ro,bind $W"
# tmpfs at the workspace's own path, the workspace copied in, then every free byte filled.
FULL = (
    "cp -a $W/. $W.stage; mount -t tmpfs -o size=64m tmpfs $W; cp -a $W.stage/. $W; "
    "dd if=/dev/zero of=$W/.fill bs=64k 2>/dev/null || true"
)


@mounts
@pytest.mark.parametrize("cmd", ["request submit", "batch run", "train", "review approve"])
def test_a_read_only_workspace_is_one_line_before_any_work(ws_copy, cmd):
    before = _fingerprint(ws_copy)
    proc = _cli_in_namespace(READ_ONLY, ws_copy, COMMANDS[cmd])
    _assert_one_line(proc.returncode, proc.stderr, "is not writable (Read-only file system)")
    assert _fingerprint(ws_copy) == before


@mounts
@pytest.mark.parametrize("cmd", ["request submit", "request list", "batch run"])
def test_a_full_disk_is_one_line_naming_the_store(ws_copy, cmd):
    (ws_copy.parent / "ws.stage").mkdir()
    proc = _cli_in_namespace(FULL, ws_copy, COMMANDS[cmd])
    _assert_one_line(proc.returncode, proc.stderr, "requests.db cannot grow: the disk is full")
