"""A review decision is all or nothing. A locked git index stops it before anything changes; a
git commit that fails part-way (a real failure: a pre-commit hook that refuses) leaves a decision
that the next `review approve` / `review reject` of the same version completes, instead of a
half-decided version that every retry refuses."""

from __future__ import annotations

import json
import stat
from datetime import timedelta

import pytest

from pipelines.audit import ALIAS_LOG, verify
from pipelines.cli import main
from pipelines.flow import deletion_batch
from pipelines.intake import submit
from pipelines.keys import sign_as
from pipelines.review import ReviewError, approve, reject
from pipelines.store import RequestStore
from tests.conftest import make_workspace


def _statuses(ws) -> set[str]:
    with RequestStore(ws.requests_db) as store:
        return {r.status for r in store.list()}


def _refuse_commits(ws, on: bool) -> None:
    hook = ws.root / ".git" / "hooks" / "pre-commit"
    if on:
        hook.write_text("#!/bin/sh\necho 'commits refused by the test hook' >&2\nexit 1\n")
        hook.chmod(hook.stat().st_mode | stat.S_IEXEC)
    else:
        hook.unlink()


def _history(ws) -> list[dict]:
    return [json.loads(x) for x in (ws.root / ALIAS_LOG).read_text().splitlines() if x.strip()]


def _cli(capsys, ws, *args) -> tuple[int, str]:
    code = main(["-w", str(ws.root), *args])
    return code, capsys.readouterr().err


def _refused_while_a_batch_runs(capsys, ws, name: str, v2: str) -> None:
    """A batch (or another decision) of the model runs: the decision waits its turn, in one
    line, having changed nothing. Each decision holds the model's lease, so an approval and a
    rejection of one version cannot both pass their checks at once."""
    with RequestStore(ws.requests_db) as store:
        store.take_lease(name, "batch-running", timedelta(hours=1))  # this process: alive
    for args in (["approve", name, v2], ["reject", name, v2, "--reason", "x"]):
        code, err = _cli(capsys, ws, "review", *args, "--reviewer", "alice")
        assert code == 2 and err.count("\n") == 1, err
        assert f"cannot {args[0]} {name}/{v2} now: batch batch-running of {name}" in err, err
        assert err.strip().endswith("one batch per model at a time (nothing was decided)"), err
    with RequestStore(ws.requests_db) as store:
        store.drop_lease(name, "batch-running")
    assert ws.registry().resolve(name, v2).tags["status"] == "awaiting_approval"


def test_a_decision_is_all_or_nothing_under_git_failures(tmp_path, prefect_server, capsys):
    ws = make_workspace(tmp_path)
    reg, name = ws.registry(), ws.settings.registry.model_name
    submit(ws, {"kind": "class", "class_label": 7})
    v2 = deletion_batch(str(ws.root)).model_version
    head = ws.git("rev-parse", "HEAD")

    # 1. Git lock files (the index's, HEAD's, a branch's): one line naming each, nothing decided.
    for rel in ("index.lock", "HEAD.lock", "refs/heads/main.lock"):
        lock = ws.root / ".git" / rel
        lock.touch()
        code, err = _cli(capsys, ws, "review", "approve", name, v2, "--reviewer", "alice")
        lock.unlink()
        assert code == 2 and err.count("\n") == 1 and f"{rel} exists" in err, err
        assert "remove it once" in err, err
    both = [ws.root / ".git" / rel for rel in ("index.lock", "HEAD.lock")]
    for lock in both:
        lock.touch()
    code, err = _cli(
        capsys, ws, "review", "reject", name, v2, "--reviewer", "alice", "--reason", "x"
    )
    for lock in both:
        lock.unlink()
    assert code == 2 and err.count("\n") == 1 and "HEAD.lock exist:" in err, err
    assert "index.lock" in err and "remove them once" in err, err
    mv = reg.resolve(name, v2)
    assert mv.tags["status"] == "awaiting_approval" and "candidate" in mv.aliases
    assert str(reg.champion(name).version) == "1" and ws.git("rev-parse", "HEAD") == head

    _refused_while_a_batch_runs(capsys, ws, name, v2)  # 1b

    # 2. The history commit fails after the signed record, tag and alias are written (the
    # review key published beforehand, as by any earlier decision: else that commit fails first).
    sign_as(ws, "review", b"an earlier decision")
    _refuse_commits(ws, True)
    code, err = _cli(capsys, ws, "review", "approve", name, v2, "--reviewer", "alice")
    _refuse_commits(ws, False)
    assert code == 2 and err.count("\n") == 1 and "refused by the test hook" in err, err
    assert reg.resolve(name, v2).tags["status"] == "approved"
    assert _statuses(ws) == {"awaiting_approval"}

    # 3. The retry completes it: alias, committed history (one entry), requests, verification.
    decision = approve(ws, reg, name, v2, "alice")
    assert "completed the approval by alice" in decision.text
    assert (
        str(reg.champion(name).version) == v2 and "candidate" not in reg.resolve(name, v2).aliases
    )
    assert [e["version"] for e in _history(ws) if e["alias"] == "champion"] == ["1", v2]
    assert ws.git("status", "--porcelain", "--", ALIAS_LOG) == ""
    assert _statuses(ws) == {"certified"}
    assert verify(ws, reg, name, v2).ok
    with pytest.raises(ReviewError, match="already approved"):
        approve(ws, reg, name, v2, "alice")
    with RequestStore(ws.requests_db) as store:
        assert store.lease(name) is None  # each decision let go of the model's lease

    # 4. The same for a rejection: the data snapshot goes back to the champion's on the retry.
    submit(ws, {"kind": "class", "class_label": 2})
    v3 = deletion_batch(str(ws.root)).model_version
    _refuse_commits(ws, True)
    with pytest.raises(Exception, match="refused by the test hook"):
        reject(ws, reg, name, v3, "bob", "wrong class")
    _refuse_commits(ws, False)
    assert reg.resolve(name, v3).tags["status"] == "rejected"
    decision = reject(ws, reg, name, v3, "bob", "wrong class")
    assert "completed the rejection by bob" in decision.text
    rejected = [e for e in _history(ws) if e.get("previous") == v3 and e["alias"] == "candidate"]
    assert len(rejected) == 1 and ws.git("status", "--porcelain", "--", "data", "audit") == ""
    champion_rev = reg.champion(name).tags["data.after_rev"]
    assert ws.git("show", "HEAD:data/raw.dvc") == ws.git("show", f"{champion_rev}:data/raw.dvc")
    assert _statuses(ws) == {"certified", "pending"}
    assert "candidate" not in reg.resolve(name, v3).aliases
