"""`kill -9` at each stage of a real `unlearn batch run` (its own process group, its own Prefect
server), then a normal run: no request lost or stuck, nothing half-written, exactly one candidate,
and every version verifies. A killed process runs no `except` and no `finally`: only what the
next run reads back from the stores can put things right."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable

import pytest

from pipelines.audit import verify
from pipelines.flow import deletion_batch
from pipelines.intake import submit
from pipelines.store import RequestStore
from tests.conftest import make_workspace

CLI = "from pipelines.cli import entrypoint; entrypoint()"


def _batch_of(ws) -> str:
    with RequestStore(ws.requests_db) as store:
        lease = store.lease(ws.settings.registry.model_name)
    return lease.batch_id if lease else ""


def _claimed(ws, reg) -> bool:
    with RequestStore(ws.requests_db) as store:
        return any(r.status == "processing" for r in store.list())


def _lease_stage(ws) -> str:
    with RequestStore(ws.requests_db) as store:
        lease = store.lease(ws.settings.registry.model_name)
    return lease.stage if lease is not None else ""


def _unlearning(ws, reg) -> bool:
    return _lease_stage(ws) == "unlearn"


def _snapshot_committed(ws, reg) -> bool:
    batch = _batch_of(ws)
    return bool(batch) and ws.git("log", "-1", "--format=%s").startswith(f"{batch}:")


def _registering(ws, reg) -> bool:
    batch = _batch_of(ws)
    exp = reg.client.get_experiment_by_name(ws.settings.registry.experiment)
    return bool(batch) and bool(
        reg.client.search_runs([exp.experiment_id], f"tags.batch_id = '{batch}'")
    )


STAGES: dict[str, Callable] = {
    "after claim": _claimed,
    "during unlearning": _unlearning,
    "after the snapshot commit": _snapshot_committed,
    "during registration": _registering,
}


def _kill_when(ws, reg, reached: Callable, timeout: float = 240.0) -> None:
    """Start `unlearn batch run` in its own process group and SIGKILL the group once `reached`."""
    proc = subprocess.Popen(
        [sys.executable, "-c", CLI, "-w", str(ws.root), "batch", "run"],
        start_new_session=True,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + timeout
    try:
        while not reached(ws, reg):
            assert proc.poll() is None, "the batch ended before the stage it was to be killed at"
            assert time.monotonic() < deadline, "the stage was never reached"
            time.sleep(0.05)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)


@pytest.mark.parametrize("stage", list(STAGES))
def test_kill_9_at_each_stage_then_a_normal_run_loses_nothing(tmp_path, prefect_server, stage):
    ws = make_workspace(tmp_path)
    reg, name = ws.registry(), ws.settings.registry.model_name
    stored, _, _ = submit(ws, {"kind": "class", "class_label": 5})
    _kill_when(ws, reg, STAGES[stage])
    with RequestStore(ws.requests_db) as store:
        assert store.get(stored.id).status == "processing"  # what a crash leaves behind
        crashed = store.lease(name).batch_id
    # Whether the dead batch committed its snapshot: the last commit of `data/raw.dvc`, not HEAD,
    # which may be a later audit commit of the batch (its signing key's, published before the
    # certificate, names no batch).
    committed = ws.git("log", "-1", "--format=%s", "--", "data/raw.dvc").startswith(f"{crashed}:")

    outcome = deletion_batch(str(ws.root))  # recovers the dead batch first, then runs

    assert outcome.status == "awaiting_approval", outcome.reason
    with RequestStore(ws.requests_db) as store:
        req = store.get(stored.id)
        history = [note for _, _, note in store.history(stored.id)]
        assert store.lease(name) is None  # the normal run let go of it
    assert req.status == "awaiting_approval" and req.model_version == outcome.model_version
    assert any(f"batch {crashed} did not finish" in n for n in history), history
    versions = reg.versions(name)
    assert str(reg.resolve(name, alias="candidate").version) == outcome.model_version
    assert [str(v.version) for v in versions] == ["1", outcome.model_version]
    assert all(v.tags.get("batch_id") != crashed for v in versions)  # no half-written version
    assert ws.git("status", "--porcelain", "--", "data") == ""
    scratch = ws.state / "batches"  # the dead batch's unlearned weights went with its recovery
    assert not scratch.exists() or not any(scratch.iterdir()), list(scratch.iterdir())
    # A snapshot the dead batch committed is superseded by a commit saying why, not left at HEAD
    # as if it were certified; the history itself is never rewritten.
    subjects = ws.git("log", "--format=%s").splitlines()
    restored = [s for s in subjects if s.startswith(f"{crashed}: did not finish")]
    assert len(restored) == (1 if committed else 0), subjects[:6]
    # The new version's snapshot is the data at HEAD: commits after it hold only audit files
    # (the certificate's copy, a signing key published the first time it signs).
    after_rev = reg.resolve(name, outcome.model_version).tags["data.after_rev"]
    changed = ws.git("diff", "--name-only", after_rev, "HEAD").splitlines()
    assert changed and all(p.startswith("audit/") for p in changed), changed
    exp = reg.client.get_experiment_by_name(ws.settings.registry.experiment)
    assert not reg.client.search_runs([exp.experiment_id], "attributes.status = 'RUNNING'")
    for v in versions:
        report = verify(ws, reg, name, str(v.version))
        assert report.ok, (v.version, report.problems)


def test_a_second_batch_run_of_the_same_model_refuses_in_one_line_while_the_first_runs(
    tmp_path, prefect_server, capsys
):
    from pipelines.cli import main

    ws = make_workspace(tmp_path)
    reg, name = ws.registry(), ws.settings.registry.model_name
    submit(ws, {"kind": "class", "class_label": 2})
    first = subprocess.Popen(
        [sys.executable, "-c", CLI, "-w", str(ws.root), "batch", "run"], start_new_session=True
    )
    deadline = time.monotonic() + 240
    while not _claimed(ws, reg):
        assert first.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    code = main(["-w", str(ws.root), "batch", "run"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1, err
    assert "is running; one batch per model at a time" in err
    assert first.wait(timeout=300) == 0
    assert reg.has_alias(name, "candidate")
    assert [str(v.version) for v in reg.versions(name)] == ["1", "2"]  # exactly one candidate


def test_batch_recover_returns_a_killed_batchs_requests_without_starting_one(
    tmp_path, prefect_server, capsys
):
    from pipelines.cli import main

    ws = make_workspace(tmp_path)
    reg = ws.registry()
    stored, _, _ = submit(ws, {"kind": "class", "class_label": 3})
    _kill_when(ws, reg, _unlearning)
    assert main(["-w", str(ws.root), "batch", "recover"]) == 0
    out = capsys.readouterr().out
    assert (
        "recovered batch-" in out and "its process" in out and "1 requests back to pending" in out
    )
    with RequestStore(ws.requests_db) as store:
        assert store.get(stored.id).status == "pending"
        assert "did not finish" in store.get(stored.id).reason
    assert main(["-w", str(ws.root), "batch", "recover"]) == 0
    assert "nothing to recover" in capsys.readouterr().out


def _publishing(ws, reg) -> bool:
    return _lease_stage(ws) == "publish"


@pytest.mark.parametrize("stage", ["during unlearning", "during publishing"])
def test_a_batch_whose_lease_is_taken_over_mid_run_stops_and_leaves_no_candidate(
    tmp_path, prefect_server, stage
):
    """Another run took the model over while this batch worked (its lease had run out, say the
    store was unreachable past it): the batch stops in one line, at its next stage or, while
    publishing, before its version becomes the candidate; it leaves no version, and its requests
    are pending again for whoever holds the lease."""
    ws = make_workspace(tmp_path)
    reg, name = ws.registry(), ws.settings.registry.model_name
    stored, _, _ = submit(ws, {"kind": "class", "class_label": 4})
    first = subprocess.Popen(
        [sys.executable, "-c", CLI, "-w", str(ws.root), "batch", "run"],
        start_new_session=True, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    deadline = time.monotonic() + 240
    reached = {"during unlearning": _unlearning, "during publishing": _publishing}[stage]
    while not reached(ws, reg):
        assert first.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    with RequestStore(ws.requests_db) as store:  # the takeover: one statement, as take_lease's
        store._db.exec_driver_sql(f"UPDATE leases SET batch_id = 'usurper' WHERE model = '{name}'")
    _, err = first.communicate(timeout=300)
    assert first.returncode == 2, err[-2000:]
    assert len(err.strip().splitlines()) == 1, err[-2000:]
    assert "lost the lease of" in err and "holds it now); it stops here" in err, err
    assert err.strip().endswith("(its requests are pending again)"), err
    assert [str(v.version) for v in reg.versions(name)] == ["1"]  # no version left
    assert not reg.has_alias(name, "candidate")
    with RequestStore(ws.requests_db) as store:
        assert store.lease(name).batch_id == "usurper"  # the taker's lease is left alone
        assert store.get(stored.id).status == "pending"
        store.drop_lease(name, "usurper")
    assert deletion_batch(str(ws.root)).status == "awaiting_approval"
