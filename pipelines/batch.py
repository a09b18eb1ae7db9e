"""The steps of a deletion batch, as plain functions (the Prefect flow in flow.py chains them).

plan -> pin snapshot -> extract forget set -> unlearn -> evaluate -> gates -> publish | release
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

import numpy as np
from torch import nn

from components.data import Split
from components.evaluation import EvalSplits, evaluate_outputs
from components.forget import ForgetSplit, extract_forget_set, forget_manifest, manifest_sha256
from components.gates import GateReport, evaluate_gates
from components.models import model_digest
from components.report_data import ReportData, report_data, thumbnails
from components.requests import RequestError, resolve
from components.runtime import ProgressFn, no_progress, resolve_device
from components.scheduling import reason_to_wait
from components.settings import (
    EvaluationSettings,
    GateSettings,
    ReportSettings,
    ScheduleSettings,
)
from components.unlearning.registry import get_method
from components.unlearning.types import MethodConfig, UnlearnResult, UnlearnTask
from pipelines.registry import ALIAS_CANDIDATE, ALIAS_CHAMPION, Registry, VersionRef, data_rev
from pipelines.snapshot import DataState, read_state
from pipelines.store import RequestStore, StoredRequest
from pipelines.workspace import Workspace

METHOD = "rfa"


class BatchError(RuntimeError):
    """The batch cannot start or cannot proceed; its requests stay (or return to) pending."""


@dataclass(frozen=True)
class BatchPlan:
    batch_id: str
    scenario: str
    requests: tuple[StoredRequest, ...]


@dataclass
class Pinned:
    base: VersionRef
    model: nn.Module
    spec: dict
    state: DataState


@dataclass
class Extraction:
    split: ForgetSplit
    manifest: dict
    manifest_sha256: str
    forget_classes: tuple[int, ...]
    test: Split
    heldout: Split


@dataclass
class Evaluation:
    original: dict
    unlearned: dict
    gates: GateReport
    base_gates: GateReport  # the same gates on the untouched base: did it already meet them?
    plots: ReportData | None = None  # what the batch report draws

    def gates_record(self) -> dict:
        """The gate report as certified: with whether the base model already met every forgetting
        gate (then the batch had nothing measurable to forget, and the certificate says so)."""
        met = self.base_gates.forgetting_passed
        return {
            **self.gates.to_dict(),
            "base_model_met_forgetting_gates": met,
            "base_model_gates": [
                {"name": r.name, "value": r.value, "passed": r.passed}
                for r in self.base_gates.results
            ],
            "forgetting_evidence": (
                "none: the base model already met every forgetting gate before unlearning"
                if met
                else "unlearning moved the model past forgetting gates the base model failed"
            ),
        }


def preflight(name: str, store: RequestStore, reg: Registry) -> int:
    """What would stop a batch of model `name`, checked before any flow starts (a Prefect server
    takes seconds to start): no champion, or a candidate awaiting review. Returns the number of
    pending requests."""
    if not reg.has_alias(name, ALIAS_CHAMPION):
        raise BatchError(
            f"{name} has no champion model; run `unlearn train` or `unlearn model import` first"
        )
    lease = store.lease(name)
    if lease is not None and not lease.stale():
        raise BatchError(f"{lease.describe()} is running; one batch per model at a time")
    if reg.has_alias(name, ALIAS_CANDIDATE):
        v = reg.resolve(name, alias=ALIAS_CANDIDATE).version
        raise BatchError(
            f"{name} version {v} awaits review; approve or reject it before the next batch"
        )
    return len(store.list("pending"))


def new_batch_id() -> str:
    return f"batch-{datetime.now(UTC):%Y%m%dT%H%M%S}-{secrets.token_hex(2)}"


def plan_batch(name: str, store: RequestStore, reg: Registry, batch_id: str) -> BatchPlan | None:
    """Claim the pending requests of one scenario, the one of the request due first. None if
    nothing pends."""
    if reg.has_alias(name, ALIAS_CANDIDATE):
        v = reg.resolve(name, alias=ALIAS_CANDIDATE).version
        raise BatchError(
            f"{name} version {v} awaits review; approve or reject it before the next batch"
        )
    pending = store.ready()  # deferred requests (by hand, or after failed gates) wait their turn
    if not pending:
        return None
    # The request due first decides the scenario (a class request wins a tie: it erases more);
    # every pending request of that scenario joins it.
    first = min(pending, key=lambda r: (r.deadline, r.scenario != "class"))
    chosen = tuple(r for r in pending if r.scenario == first.scenario)
    store.claim([r.id for r in chosen], batch_id)
    return BatchPlan(batch_id, chosen[0].scenario, chosen)


def reason_to_wait_for(store: RequestStore, schedule: ScheduleSettings) -> str | None:
    """Why a scheduled run should wait for more ready requests (None: run now)."""
    deadlines = [datetime.fromisoformat(r.deadline) for r in store.ready()]
    return reason_to_wait(
        deadlines, datetime.now(UTC), schedule.min_requests, schedule.deadline_margin_days
    )


@dataclass(frozen=True)
class PinRef:
    """The champion a batch starts from, as plain values: its version, the git revision of the
    data snapshot it was trained on and its registered weights digest (checked at every load)."""

    name: str
    version: str
    data_rev: str
    digest: str

    @property
    def base(self) -> VersionRef:
        return VersionRef(self.name, self.version)


def pin_ref(reg: Registry, name: str) -> PinRef:
    """The champion of model `name` and its data snapshot's revision."""
    try:
        mv = reg.champion(name)
    except Exception:
        raise BatchError(
            f"{name} has no champion model; run `unlearn train` or `unlearn model import` first"
        ) from None
    rev = data_rev(mv.tags)
    if not rev:
        raise BatchError(
            f"{name} version {mv.version} carries no data snapshot tag; cannot pin its training "
            "data"
        )
    return PinRef(name, str(mv.version), rev, mv.tags.get("model_digest", ""))


def load_pinned(ws: Workspace, reg: Registry, pin: PinRef) -> Pinned:
    """The pinned champion's weights (checked against their registered digest) and snapshot."""
    model, spec = reg.load_model(pin.base)
    if model_digest(model) != pin.digest:
        raise BatchError(
            f"{pin.base}: weights do not match their registered digest; refusing to unlearn from "
            "them"
        )
    return Pinned(pin.base, model, spec, read_state(ws, pin.data_rev))


@dataclass(frozen=True)
class Resolution:
    """The plan's requests resolved against the pinned snapshot: the sample ids of those that can
    be served, and the reason for each that cannot (set aside, so one does not stop the rest)."""

    ids: frozenset[str]
    served: tuple[StoredRequest, ...]
    set_aside: dict[str, str]


def resolve_requests(pinned: Pinned, plan: BatchPlan) -> Resolution:
    """Each request to sample ids of the pinned snapshot; a request whose samples an earlier
    batch erased (or whose class was forgotten, or subject is unknown) is set aside."""
    st = pinned.state
    num_classes = int(pinned.spec["num_classes"])
    forgotten = {int(c) for c in st.forgotten_classes}
    ids: set[str] = set()
    served, set_aside = [], {}
    for r in plan.requests:
        try:
            ids |= set(resolve(r.request, st.train, num_classes, st.subjects, st.erased, forgotten))
            served.append(r)
        except RequestError as err:
            set_aside[r.id] = f"set aside by {plan.batch_id}: {err}"
    return Resolution(frozenset(ids), tuple(served), set_aside)


def forget_classes(plan: BatchPlan) -> tuple[int, ...]:
    """The classes a batch's class requests name (empty for sample and subject requests)."""
    return tuple(
        sorted(int(r.request.class_label) for r in plan.requests if r.request.kind == "class")
    )


def extract(
    pinned: Pinned,
    ids: frozenset[str],
    forget_classes: tuple[int, ...],
    max_forget_fraction: float,
) -> Extraction:
    """Df (the resolved ids), Dr and the manifest from the pinned snapshot. A forget set above
    `max_forget_fraction` of the training data is refused (retrain instead)."""
    st = pinned.state
    forgotten = {int(c) for c in st.forgotten_classes}
    split = extract_forget_set(st.train, set(ids), max_forget_fraction)
    # Dt and the heldout reference only cover classes still in scope: a class forgotten by an
    # earlier batch is no longer something the model should (or can) get right.
    keep_t = ~np.isin(st.test.y, np.array(sorted(forgotten), dtype=np.int64))
    keep_h = ~np.isin(st.heldout.y, np.array(sorted(forgotten), dtype=np.int64))
    manifest = forget_manifest(split.forget)
    return Extraction(
        split,
        manifest,
        manifest_sha256(manifest),
        forget_classes,
        st.test.take(keep_t),
        st.heldout.take(keep_h),
    )


def unlearn(
    pinned: Pinned,
    ext: Extraction,
    scenario: str,
    cfg: MethodConfig,
    progress: ProgressFn = no_progress,
) -> UnlearnResult:
    """The registered method (RFA) on the batch's Df / Dr, from the pinned champion."""
    task = UnlearnTask(
        scenario, ext.split.forget, ext.split.retain, ext.heldout, ext.forget_classes
    )
    if cfg.rfa.processes > 1:  # torchrun's processes report when done, not step by step
        from pipelines.distributed import rfa_processes

        return rfa_processes(pinned.model, task, cfg.lora, cfg.rfa, cfg.rfa.processes)
    return get_method(METHOD)(pinned.model, task, cfg, progress)


def assess(
    pinned: Pinned,
    ext: Extraction,
    result: UnlearnResult,
    scenario: str,
    evaluation: EvaluationSettings,
    gates: GateSettings,
    device: str,
    timings: dict[str, float] | None = None,
    report: ReportSettings = ReportSettings(),
) -> Evaluation:
    """Both models on the same splits, then the gates on the unlearned model and on the base,
    and what the batch report plots."""
    # ext.heldout is RFA's reference only: the gates read Df, Dr and Dt (EvalSplits).
    splits = EvalSplits.build(
        ext.split.forget, ext.split.retain, ext.test, ext.forget_classes, evaluation
    )
    (original, unlearned), outs = evaluate_outputs(
        [pinned.model, result.model], splits, evaluation, resolve_device(device), timings
    )
    n = report.sample_images
    images = (thumbnails(splits.forget, n), thumbnails(splits.retain, n))
    plots = report_data(
        *((o[1], o[0], o[2]) for o in outs),  # (Df, Dr, Dt) of the base, then the unlearned
        num_classes=int(pinned.spec["num_classes"]),
        history=result.history,
        images=images,
    )
    return Evaluation(
        original,
        unlearned,
        evaluate_gates(scenario, original, unlearned, gates),
        evaluate_gates(scenario, original, original, gates),
        plots,
    )


def record_failure(reg: Registry, plan: BatchPlan, ev: Evaluation) -> str:
    """Log a failed-gates run (metrics and gate numbers, no model version); returns its run id."""
    tags = {"batch_id": plan.batch_id, "scenario": plan.scenario, "status": "gates_failed"}
    metrics = {f"unlearned.{k}": v for k, v in ev.unlearned.items() if v is not None and v == v}
    return reg.log_run(
        f"{plan.batch_id}-gates-failed", tags, metrics, {"gates.json": ev.gates_record()}
    )


def release_after_gates(
    store: RequestStore, plan: BatchPlan, reason: str, backoff_minutes: float, escalate_after: int
) -> list[str]:
    """Failed gates: the requests go back to pending, each deferred for the backoff doubled per
    failure it has had, so a request that keeps failing does not block those behind it; after
    `escalate_after` failures (0 = never) it is set aside for a person instead. Returns the ids
    escalated."""
    release(store, plan, reason)
    escalated = []
    for r in plan.requests:
        n = store.failures(r.id)
        if escalate_after and n >= escalate_after:
            store.escalate(
                r.id,
                f"escalated after {n} failed batches ({reason}); decide with `unlearn request "
                "retry|extend|cancel`",
            )
            escalated.append(r.id)
            continue
        until = datetime.now(UTC) + timedelta(minutes=backoff_minutes * 2 ** max(0, n - 1))
        why = f"{reason} (failure {n}; retried after {until:%Y-%m-%d %H:%M} UTC)"
        store.defer(r.id, until.replace(microsecond=0).isoformat(), why)
    return escalated


def release(store: RequestStore, plan: BatchPlan, reason: str) -> int:
    """Return a batch's requests to pending with the reason; they are never dropped."""
    return store.transition(plan.batch_id, "pending", reason=reason)
