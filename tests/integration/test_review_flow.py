"""Approval in Prefect: the review-candidate flow pauses with a typed form on a real Prefect
server; the answer is bound to the certificate hash the form showed."""

from __future__ import annotations

import contextvars
import threading
import time

import pytest

from pipelines.flow import deletion_batch
from pipelines.intake import submit
from pipelines.review import REFUSALS, ReviewError
from pipelines.review_flow import review_candidate
from tests.conftest import make_workspace


def _start(ws, name: str, version: str) -> tuple[threading.Thread, dict]:
    """The flow in a thread (it blocks while paused), with the test's Prefect settings."""
    result: dict = {}

    def target():
        try:
            result["value"] = review_candidate(str(ws.root), name, version, poll_seconds=1)
        except Exception as err:  # the flow's failure, for the test to read
            result["error"] = err

    ctx = contextvars.copy_context()
    t = threading.Thread(target=lambda: ctx.run(target), daemon=True)
    t.start()
    return t, result


def _paused_run(timeout: float = 120.0):
    from prefect import get_client
    from prefect.client.schemas.filters import (
        FlowFilter,
        FlowFilterName,
        FlowRunFilter,
        FlowRunFilterState,
        FlowRunFilterStateType,
    )
    from prefect.client.schemas.objects import StateType

    flt = FlowRunFilter(
        state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.PAUSED]))
    )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with get_client(sync_client=True) as client:
            runs = client.read_flow_runs(
                flow_filter=FlowFilter(name=FlowFilterName(any_=["review-candidate"])),
                flow_run_filter=flt,
            )
        if runs:
            return runs[0]
        time.sleep(0.5)
    pytest.fail("the review flow never paused")


def _answer(thread, result, **form) -> dict:
    from prefect.flow_runs import resume_flow_run
    from prefect.input.actions import read_flow_run_input
    from prefect.input.run_input import keyset_from_paused_state

    run = _paused_run()
    keys = keyset_from_paused_state(run.state)
    shown = read_flow_run_input(keys["description"], flow_run_id=run.id)
    schema = read_flow_run_input(keys["schema"], flow_run_id=run.id)
    resume_flow_run(run.id, run_input=form)
    thread.join(timeout=120)
    assert not thread.is_alive()
    return {**result, "shown": shown, "schema": schema}


def test_the_prefect_form_approves_only_the_certificate_it_showed(tmp_path, prefect_server):
    ws = make_workspace(tmp_path)
    reg, name = ws.registry(), ws.settings.registry.model_name
    submit(ws, {"kind": "class", "class_label": 7})
    outcome = deletion_batch(str(ws.root))
    assert outcome.status == "awaiting_approval", outcome.reason
    version, cert = outcome.model_version, outcome.certificate_sha256

    # A hash other than the registered one (the candidate changed since the form was read).
    t, res = _start(ws, name, version)
    got = _answer(t, res, decision="approve", reviewer="erin", certificate_sha256="0" * 64)
    assert cert in got["shown"] and "Gates: all passed" in got["shown"]
    assert set(got["schema"]["properties"]) >= {"decision", "reviewer", "certificate_sha256"}
    assert isinstance(got["error"], ReviewError)
    assert "certificate hash 000000000000... is not the registered" in str(got["error"])
    assert reg.resolve(name, version).tags["status"] == "awaiting_approval"
    assert '"reviewer": "erin"' in (ws.root / REFUSALS).read_text()

    # The hash echoed back: approved through review.approve, signed, champion moved.
    t, res = _start(ws, name, version)
    got = _answer(t, res, decision="approve", reviewer="erin", certificate_sha256=cert)
    assert "error" not in got, got.get("error")
    assert got["value"]["decision"] == "approve"
    mv = reg.resolve(name, version)
    assert mv.tags["status"] == "approved" and mv.tags["approved_by"] == "erin"
    assert str(reg.champion(name).version) == version
