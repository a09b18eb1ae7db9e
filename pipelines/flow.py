"""The deletion-batch flow (Prefect). The body reads like a table of contents; the tasks, which
take plain values and re-open what they need, are in pipelines/batch_tasks.py, the steps in
pipelines/batch.py and the math in components/.

Any failure after the requests are claimed returns them to `pending` with the reason: a request
is never lost, whatever breaks.
"""

from __future__ import annotations

import dataclasses
import shutil
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from uuid import UUID

from prefect import Task, flow, get_run_logger
from prefect.artifacts import create_progress_artifact, update_progress_artifact
from prefect.client.schemas.objects import FlowRun, State
from prefect.logging.loggers import flow_run_logger

from components.runtime import timed
from pipelines import batch as steps
from pipelines import batch_tasks as tasks
from pipelines.batch_report import report_failure
from pipelines.lease import LeaseHeld, LeaseLost
from pipelines.lease_keeper import holding
from pipelines.progress import report
from pipelines.recover import recover_now, recover_stale, undo_batch
from pipelines.registry import Registry
from pipelines.store import RequestStore
from pipelines.workspace import Workspace


@dataclass
class BatchOutcome:
    status: str  # nothing_pending | waiting | awaiting_approval | gates_failed | set_aside
    batch_id: str = ""
    scenario: str = ""
    model_version: str = ""
    certificate_sha256: str = ""
    reason: str = ""
    original: dict = field(default_factory=dict)
    unlearned: dict = field(default_factory=dict)
    gates: dict = field(default_factory=dict)
    seconds: float = 0.0  # the unlearning step (RFA) alone
    timings: dict = field(default_factory=dict)  # wall seconds per stage of the whole batch
    escalated: list[str] = field(default_factory=list)  # set aside after repeated failed gates


def _call(t: Task, *args: object) -> object:
    """Run a task through the flow's task runner and wait for it: the default runs it on a thread
    of this process; a process pool (or a distributed runner) runs it elsewhere, which works
    because every task takes plain values and re-opens what it needs (pipelines/batch_tasks.py).
    Its exception, if any, is raised here as itself."""
    return t.submit(*args).result()


def _recover_after_crash(flow: object, flow_run: FlowRun, state: State) -> None:
    """on_crashed / on_cancellation: the run's process is gone (killed, out of memory) or being
    stopped, so its own `except` never ran; recover its batch now, as the next run would. The
    hook runs in the process that watched it (the `unlearn serve` runner)."""
    logger = flow_run_logger(flow_run)
    ws = Workspace(Path(flow_run.parameters["workspace"]))
    try:
        for rec in recover_now(ws, f"hook-{flow_run.id}"):
            logger.warning("after %s: %s", state.name, rec.text())
    except LeaseHeld as err:  # still alive (a cancellation in progress): the next run recovers
        logger.warning("after %s: not recovered yet (%s)", state.name, err)


@flow(
    name="deletion-batch",
    log_prints=True,
    on_crashed=[_recover_after_crash],
    on_cancellation=[_recover_after_crash],
)
def deletion_batch(workspace: str, scheduled: bool = False, model: str = "") -> BatchOutcome:
    """One batch of one model: hold its lease, recover any batch that died, then run. A
    scheduled run waits for `schedule.min_requests` unless a deadline is near. `model`, when
    given (a deployment names it), must be the model the workspace serves."""
    ws = Workspace(Path(workspace))
    reg, s = ws.registry(), ws.settings
    name = s.registry.model_name
    if model and model != name:
        raise steps.BatchError(f"the workspace at {workspace} serves {name}, not {model}")
    ttl = timedelta(minutes=s.requests.batch_lease_minutes)
    batch_id = steps.new_batch_id()
    with RequestStore(ws.requests_db) as store, ExitStack() as lease:
        try:  # taken, renewed while the batch runs, let go after it
            replaced = lease.enter_context(holding(ws.requests_db, name, batch_id, ttl))
        except LeaseHeld as err:
            raise steps.BatchError(str(err)) from None
        try:
            for rec in recover_stale(ws, store, reg, name, replaced):
                print(rec.text())
            wait = steps.reason_to_wait_for(store, s.schedule) if scheduled else None
            if wait:
                print(f"waiting: {wait}")
                return BatchOutcome("waiting", reason=wait)
            stage = Stages(store, name, batch_id, ttl, _progress_artifact(batch_id))
            return _run(ws, reg, store, batch_id, stage)
        finally:
            tasks.forget_memo()
            shutil.rmtree(ws.batch_dir(batch_id), ignore_errors=True)


STAGES = ("pin", "extract", "unlearn", "evaluate", "publish")


def _progress_artifact(batch_id: str) -> UUID | None:
    """The batch's progress bar in the Prefect UI (a progress artifact of the flow run)."""
    desc = f"{batch_id}: stages {' -> '.join(STAGES)}"
    return create_progress_artifact(progress=0.0, description=desc)


@dataclass
class Stages:
    """Each stage a batch reaches is recorded on its lease (and extends it), timed, logged to the
    flow run, shown on the run's progress artifact and reported to whoever watches (CLI bars)."""

    store: RequestStore
    model: str
    batch_id: str
    ttl: timedelta
    artifact: UUID | None = None
    seconds: dict[str, float] = field(default_factory=dict)

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        self.store.touch_lease(self.model, self.batch_id, name, self.ttl)
        get_run_logger().info("%s: stage %s", self.batch_id, name)
        report(name, 0)
        if self.artifact is not None:
            update_progress_artifact(self.artifact, 100.0 * STAGES.index(name) / len(STAGES))
        with timed(self.seconds, name):
            yield
        if self.artifact is not None and name == STAGES[-1]:
            update_progress_artifact(self.artifact, 100.0)


def _run(
    ws: Workspace, reg: Registry, store: RequestStore, batch_id: str, stage: Stages
) -> BatchOutcome:
    s, t = ws.settings, stage.seconds
    workspace = str(ws.root)  # what the tasks take: a plain value each re-opens
    plan = _call(tasks.plan_task, workspace, batch_id)
    if plan is None:
        return BatchOutcome("nothing_pending")
    try:
        with stage("pin"):
            pin = _call(tasks.pin_task, workspace)
        with stage("extract"):
            resolved = _call(tasks.resolve_task, workspace, pin, plan)
            for rid, why in resolved.set_aside.items():
                store.set_aside(rid, why)
            if not resolved.served:
                reason = "; ".join(resolved.set_aside.values())
                return BatchOutcome("set_aside", plan.batch_id, plan.scenario, reason=reason)
            plan = dataclasses.replace(plan, requests=resolved.served)
            classes = steps.forget_classes(plan)
            forget = _call(tasks.extract_task, workspace, pin, resolved.ids, classes)
        with stage("unlearn"):
            trained = _call(tasks.unlearn_task, workspace, pin, forget, plan.scenario, batch_id)
        with stage("evaluate"):
            ev, seconds = _call(tasks.assess_task, workspace, pin, forget, trained, plan.scenario)
            t.update(seconds)
        outcome = BatchOutcome(
            "", plan.batch_id, plan.scenario, original=ev.original, unlearned=ev.unlearned,
            gates=ev.gates_record(), seconds=trained.info["seconds"], timings=t,
        )  # fmt: skip
        if not ev.gates.passed:
            reason = "gates failed: " + "; ".join(ev.gates.failures)
            report_failure(reg, steps.record_failure(reg, plan, ev), plan, ev)
            rq = s.requests
            outcome.escalated = steps.release_after_gates(
                store, plan, reason, rq.retry_backoff_minutes, rq.escalate_after_failures
            )
            for rid in outcome.escalated:
                get_run_logger().warning("%s escalated: set aside for a person to decide", rid)
            outcome.status, outcome.reason = "gates_failed", reason
            return outcome
        with stage("publish"):
            ref, cert_sha, seconds = _call(
                tasks.publish_task, workspace, plan, pin, forget, trained, ev
            )
            t.update(seconds)
        store.transition(plan.batch_id, "awaiting_approval", model_version=ref.version)
        outcome.status, outcome.model_version = "awaiting_approval", ref.version
        outcome.certificate_sha256 = cert_sha
        return outcome
    except Exception as err:
        reason = f"batch {plan.batch_id} failed: {err}"
        if not isinstance(err, LeaseLost):  # a batch that lost the lease leaves it to the taker
            _undo(ws, reg, plan.batch_id, str(err))
        steps.release(store, plan, reason)
        raise steps.BatchError(f"{reason} (its requests are pending again)") from err


def _undo(ws: Workspace, reg: Registry, batch_id: str, error: str) -> None:
    """Take back what the failed batch wrote (a snapshot commit, a version), as recovery after a
    kill does, so HEAD never holds an erasure no version certifies. If that fails too, it is a
    warning: the requests go back to pending all the same."""
    why = f"it failed: {error.splitlines()[0][:200] if error else 'no message'}"
    try:
        rec = undo_batch(ws, reg, ws.settings.registry.model_name, batch_id, why)
    except Exception as again:
        get_run_logger().warning("%s: could not undo its writes: %s", batch_id, again)
        return
    if rec.restored_to:
        get_run_logger().info("%s: data snapshot restored to %s", batch_id, rec.restored_to[:10])
