"""The deletion-batch flow (Prefect). The body reads like a table of contents; the work is in
pipelines/batch.py and the math in components/.

Any failure after the requests are claimed returns them to `pending` with the reason: a request
is never lost, whatever breaks.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from prefect import flow, get_run_logger, task
from prefect.cache_policies import NO_CACHE

from components.runtime import timed
from components.unlearning.types import MethodConfig
from pipelines import batch as steps
from pipelines.publish import publish
from pipelines.store import RequestStore
from pipelines.workspace import Workspace


@dataclass
class BatchOutcome:
    status: str  # nothing_pending | awaiting_approval | gates_failed
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


# Tasks take models and tensors: explicit NO_CACHE, results live in MLflow / DVC, not in Prefect.
plan_task = task(steps.plan_batch, name="plan-batch", cache_policy=NO_CACHE)
pin_task = task(steps.pin_snapshot, name="pin-snapshot", cache_policy=NO_CACHE)
extract_task = task(steps.extract, name="extract-forget-set", cache_policy=NO_CACHE)
assess_task = task(steps.assess, name="evaluate-and-gate", cache_policy=NO_CACHE)
publish_task = task(publish, name="register-candidate", cache_policy=NO_CACHE)


@task(name="unlearn-rfa", cache_policy=NO_CACHE)
def unlearn_task(
    ws: Workspace, pinned: steps.Pinned, ext: steps.Extraction, scenario: str
) -> steps.UnlearnResult:
    logger = get_run_logger()

    def progress(step: int, total: int, values: dict[str, float]) -> None:
        if step == total or step % max(1, total // 4) == 0:
            logger.info(
                "RFA step %d/%d  retain-loss %.4f  forget-loss %.4f",
                step,
                total,
                values.get("loss_retain", 0.0),
                values.get("loss_forget", 0.0),
            )

    s = ws.settings
    return steps.unlearn(pinned, ext, scenario, MethodConfig(lora=s.lora, rfa=s.rfa), progress)


@flow(name="deletion-batch", log_prints=True)
def deletion_batch(workspace: str) -> BatchOutcome:
    ws = Workspace(Path(workspace))
    reg, s = ws.registry(), ws.settings
    name = s.registry.model_name
    t: dict[str, float] = {}
    with RequestStore(ws.requests_db) as store:
        plan = plan_task(name, store, reg)
        if plan is None:
            return BatchOutcome("nothing_pending")
        try:
            with timed(t, "pin"):
                pinned = pin_task(ws, reg, name)
            with timed(t, "extract"):
                ext = extract_task(pinned, plan, s.requests.max_forget_fraction)
            with timed(t, "unlearn"):
                result = unlearn_task(ws, pinned, ext, plan.scenario)
            with timed(t, "evaluate"):
                ev = assess_task(
                    pinned, ext, result, plan.scenario, s.evaluation, s.gates, s.rfa.device, t
                )
            outcome = BatchOutcome(
                "",
                plan.batch_id,
                plan.scenario,
                original=ev.original,
                unlearned=ev.unlearned,
                gates=ev.gates_record(),
                seconds=result.seconds,
                timings=t,
            )
            if not ev.gates.passed:
                reason = "gates failed: " + "; ".join(ev.gates.failures)
                steps.record_failure(reg, plan, ev)
                steps.release(store, plan, reason)
                outcome.status, outcome.reason = "gates_failed", reason
                return outcome
            with timed(t, "publish"):
                ref, cert_sha = publish_task(ws, reg, plan, pinned, ext, result, ev, t)
            store.transition(plan.batch_id, "awaiting_approval", model_version=ref.version)
            outcome.status, outcome.model_version, outcome.certificate_sha256 = (
                "awaiting_approval",
                ref.version,
                cert_sha,
            )
            return outcome
        except Exception as err:
            reason = f"batch {plan.batch_id} failed: {err}"
            steps.release(store, plan, reason)
            raise steps.BatchError(f"{reason} (its requests are pending again)") from err
