"""Every task of the deletion batch takes plain values and re-opens what it needs: run with
Prefect's process pool task runner, each task runs in a child process that shares nothing with
the flow but its pickled arguments, and the batch is still certified."""

from __future__ import annotations

import pickle

import pytest
from prefect.task_runners import ProcessPoolTaskRunner

from pipelines import batch as steps
from pipelines import batch_tasks as tasks
from pipelines.audit import verify
from pipelines.batch import BatchError
from pipelines.flow import deletion_batch
from pipelines.intake import submit
from pipelines.store import RequestStore
from tests.conftest import make_workspace


def test_a_batch_whose_tasks_run_in_other_processes_is_certified(
    tmp_path, prefect_server, monkeypatch
):
    ws = make_workspace(tmp_path)
    reg, name = ws.registry(), ws.settings.registry.model_name
    stored, _, n = submit(ws, {"kind": "class", "class_label": 2})
    loads_here = []  # the champion loaded in this (the flow's) process: none, when tasks run away
    real = steps.load_pinned
    monkeypatch.setattr(steps, "load_pinned", lambda *a: loads_here.append(1) or real(*a))

    runner = ProcessPoolTaskRunner(max_workers=1)
    outcome = deletion_batch.with_options(task_runner=runner)(str(ws.root), model=name)

    assert outcome.status == "awaiting_approval", outcome.reason
    assert outcome.unlearned["acc_dft"] <= 1.0
    assert loads_here == []
    report = verify(ws, reg, name, outcome.model_version)
    assert report.ok, report.problems
    with RequestStore(ws.requests_db) as store:
        assert store.get(stored.id).status == "awaiting_approval"
    assert not ws.batch_dir(outcome.batch_id).exists()  # its scratch left with it


def test_what_crosses_between_tasks_is_plain(trained_ws):
    """The values one task hands the next pickle small: ids and records, not models or data."""
    ws = trained_ws
    pin = steps.pin_ref(ws.registry(), ws.settings.registry.model_name)
    forget = tasks.ForgetRef(frozenset({"a", "b"}), (), "0" * 64)
    for value in (pin, forget):
        assert pickle.loads(pickle.dumps(value)) == value
        assert len(pickle.dumps(value)) < 2048


def test_a_deployment_for_another_model_is_refused(trained_ws, prefect_server):
    with pytest.raises(BatchError, match="serves digits-cnn, not other-model"):
        deletion_batch(str(trained_ws.root), model="other-model")
