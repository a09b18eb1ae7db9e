"""The steps of a deletion batch, as plain functions (the Prefect flow in flow.py chains them).

plan -> pin snapshot -> extract forget set -> unlearn -> evaluate -> gates -> publish | release
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass
from datetime import datetime, timezone

import numpy as np
from torch import nn

from components.canonical import canonical_json
from components.certificate import (
    Certificate,
    build_certificate,
    sign,
    signing_key,
    subject_digest,
)
from components.data import Split
from components.evaluation import EvalSplits, evaluate_many
from components.forget import ForgetSplit, extract_forget_set, forget_manifest, manifest_sha256
from components.gates import GateReport, evaluate_gates
from components.models import model_digest
from components.requests import RequestError, resolve
from components.runtime import ProgressFn, no_progress, resolve_device, timed
from components.unlearning.registry import get_method
from components.unlearning.types import MethodConfig, UnlearnResult, UnlearnTask
from pipelines.provenance import code_version, package_versions
from pipelines.registry import ALIAS_CANDIDATE, ALIAS_CHAMPION, Registry, VersionRef, data_rev
from pipelines.snapshot import DataState, SnapshotInfo, commit_files, commit_snapshot, read_state
from pipelines.store import RequestStore, StoredRequest
from pipelines.workspace import Workspace, utcnow

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


def preflight(ws: Workspace, store: RequestStore, reg: Registry) -> int:
    """What would stop a batch, checked before any flow starts (a Prefect server takes seconds to
    start): no champion, or a candidate awaiting review. Returns the number of pending requests."""
    name = ws.settings.registry.model_name
    if not reg.has_alias(name, ALIAS_CHAMPION):
        raise BatchError(
            f"{name} has no champion model; run `unlearn train` or `unlearn model import` first"
        )
    if reg.has_alias(name, ALIAS_CANDIDATE):
        v = reg.resolve(name, alias=ALIAS_CANDIDATE).version
        raise BatchError(
            f"{name} version {v} awaits review; approve or reject it before the next batch"
        )
    return len(store.list("pending"))


def plan_batch(ws: Workspace, store: RequestStore, reg: Registry) -> BatchPlan | None:
    """Claim the pending requests of one scenario (class requests first). None if nothing pends."""
    name = ws.settings.registry.model_name
    if reg.has_alias(name, ALIAS_CANDIDATE):
        v = reg.resolve(name, alias=ALIAS_CANDIDATE).version
        raise BatchError(
            f"{name} version {v} awaits review; approve or reject it before the next batch"
        )
    pending = store.list("pending")
    if not pending:
        return None
    by_class = [r for r in pending if r.scenario == "class"]
    chosen = tuple(by_class or pending)
    batch_id = f"batch-{datetime.now(timezone.utc):%Y%m%dT%H%M%S}-{secrets.token_hex(2)}"
    store.claim([r.id for r in chosen], batch_id)
    return BatchPlan(batch_id, chosen[0].scenario, chosen)


def pin_snapshot(ws: Workspace, reg: Registry) -> Pinned:
    """The champion and the data snapshot it was trained / certified on."""
    name = ws.settings.registry.model_name
    try:
        mv = reg.champion(name)
    except Exception:
        raise BatchError(
            f"{name} has no champion model; run `unlearn train` or `unlearn model import` first"
        ) from None
    rev = data_rev(mv.tags)
    if not rev:
        raise BatchError(
            f"{name} version {mv.version} carries no data snapshot tag; cannot pin its training data"
        )
    ref = VersionRef(name, str(mv.version))
    model, spec = reg.load_model(ref)
    if model_digest(model) != mv.tags.get("model_digest"):
        raise BatchError(
            f"{ref}: weights do not match their registered digest; refusing to unlearn from them"
        )
    return Pinned(ref, model, spec, read_state(ws, rev))


def extract(ws: Workspace, pinned: Pinned, plan: BatchPlan) -> Extraction:
    """Resolve every request to sample ids of the pinned snapshot; build Df, Dr and the manifest."""
    st = pinned.state
    num_classes = int(pinned.spec["num_classes"])
    forgotten = {int(c) for c in st.forgotten_classes}
    ids: set[str] = set()
    for r in plan.requests:
        try:
            ids |= set(resolve(r.request, st.train, num_classes, st.subjects, st.erased, forgotten))
        except RequestError as err:
            raise BatchError(f"request {r.id}: {err}") from None
    split = extract_forget_set(st.train, ids, ws.settings.requests.max_forget_fraction)
    forget_classes = tuple(
        sorted(int(r.request.class_label) for r in plan.requests if r.request.kind == "class")
    )
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
    ws: Workspace,
    pinned: Pinned,
    ext: Extraction,
    scenario: str,
    progress: ProgressFn = no_progress,
) -> UnlearnResult:
    s = ws.settings
    task = UnlearnTask(
        scenario, ext.split.forget, ext.split.retain, ext.heldout, ext.forget_classes
    )
    return get_method(METHOD)(pinned.model, task, MethodConfig(lora=s.lora, rfa=s.rfa), progress)


def assess(
    ws: Workspace,
    pinned: Pinned,
    ext: Extraction,
    result: UnlearnResult,
    scenario: str,
    timings: dict[str, float] | None = None,
) -> Evaluation:
    s = ws.settings
    splits = EvalSplits.build(
        ext.split.forget, ext.split.retain, ext.test, ext.heldout, ext.forget_classes, s.evaluation
    )
    device = resolve_device(s.rfa.device)
    original, unlearned = evaluate_many(
        [pinned.model, result.model], splits, s.evaluation, device, timings
    )
    return Evaluation(
        original,
        unlearned,
        evaluate_gates(scenario, original, unlearned, s.gates),
        evaluate_gates(scenario, original, original, s.gates),
    )


def _request_facts(plan: BatchPlan, salt: str) -> list[dict]:
    out = []
    for r in plan.requests:
        fact = {
            "id": r.id,
            "kind": r.kind,
            "received_at": r.received_at,
            "deadline": r.deadline,
            "n_samples": r.n_samples,
        }
        if r.request.kind == "subject":
            fact["subject_sha256"] = subject_digest(r.request.subject_id or "", salt)
        if r.request.kind == "class":
            fact["class_label"] = r.request.class_label
        out.append(fact)
    return out


def record_failure(reg: Registry, plan: BatchPlan, ev: Evaluation) -> str:
    """Log a failed-gates run (metrics and gate numbers, no model version); returns its run id."""
    tags = {"batch_id": plan.batch_id, "scenario": plan.scenario, "status": "gates_failed"}
    metrics = {f"unlearned.{k}": v for k, v in ev.unlearned.items() if v is not None and v == v}
    return reg.log_run(
        f"{plan.batch_id}-gates-failed", tags, metrics, {"gates.json": ev.gates_record()}
    )


ATTACKS = [
    "SVC(C=3, rbf) on true-class confidence / entropy / modified entropy; retain vs test",
    "logistic regression on per-example cross-entropy, Df vs class-matched test, stratified k-fold",
]


def certificate_for(
    ws: Workspace,
    plan: BatchPlan,
    pinned: Pinned,
    ext: Extraction,
    result: UnlearnResult,
    ev: Evaluation,
    after: SnapshotInfo,
    unlearned: dict[str, str],
) -> Certificate:
    """The batch's certificate: requests, forget manifest, both data snapshots, both models, the
    method as run, the code, the evaluation and the gates."""
    s, st = ws.settings, pinned.state
    name = s.registry.model_name
    return build_certificate(
        batch={"id": plan.batch_id, "scenario": plan.scenario, "created_at": utcnow()},
        requests=_request_facts(plan, ws.meta["subject_salt"]),
        forget_manifest={"sha256": ext.manifest_sha256, "count": len(ext.split.forget)},
        data={"before": st.info.to_dict(), "after": after.to_dict()},
        base_model={
            "name": name, "version": pinned.base.version, "digest": model_digest(pinned.model)
        },
        unlearned_model={"name": name, **unlearned},
        method={
            "name": METHOD,
            "params": {
                "rfa": s.rfa.model_dump(mode="json"), "lora": s.lora.model_dump(mode="json")
            },
            "trainable_fraction": result.trainable_fraction,
            "steps": result.steps,
            "stop_reason": result.stop_reason,
            "device": result.device,
            "seconds": round(result.seconds, 3),
        },
        code={"version": code_version(), "packages": package_versions()},
        evaluation={"original": ev.original, "unlearned": ev.unlearned, "attacks": ATTACKS},
        gates=ev.gates_record(),
    )  # fmt: skip


def _version_tags(
    plan: BatchPlan, pinned: Pinned, ext: Extraction, ev: Evaluation, after: SnapshotInfo, digest: str
) -> dict[str, str]:
    """The version's MLflow tags; those the certificate also records are checked against it."""
    return {
        "kind": "unlearned",
        "status": "awaiting_approval",
        "batch_id": plan.batch_id,
        "scenario": plan.scenario,
        "base_version": pinned.base.version,
        "data.before_rev": pinned.state.info.git_rev,
        "data.after_rev": after.git_rev,
        "data.dvc_md5": after.dvc_md5,
        "data.dataset_sha256": after.dataset_sha256,
        "model_digest": digest,
        "forget_manifest_sha256": ext.manifest_sha256,
        "gates_passed": str(ev.gates.passed).lower(),
        "requests": ",".join(r.id for r in plan.requests),
        "code_version": code_version(),
    }


def _version_files(ext: Extraction, result: UnlearnResult, ev: Evaluation) -> dict[str, bytes]:
    from safetensors.torch import save as st_save

    return {
        "adapter.safetensors": st_save(result.adapter) if result.adapter else b"",
        "forget_manifest.json": canonical_json(ext.manifest),
        "gates.json": canonical_json(ev.gates_record()),
        "metrics.json": canonical_json(
            {"original": ev.original, "unlearned": ev.unlearned, "history": result.history}
        ),
    }


def publish(
    ws: Workspace,
    reg: Registry,
    plan: BatchPlan,
    pinned: Pinned,
    ext: Extraction,
    result: UnlearnResult,
    ev: Evaluation,
    timings: dict[str, float] | None = None,
) -> tuple[VersionRef, str]:
    """Commit the data snapshot without Df, register the unlearned version with its certificate,
    alias it `candidate`. A version that cannot be completed is deleted again."""
    s = ws.settings
    st = pinned.state
    key = signing_key(s.certificate.key_env)  # before any write: no key, no certificate, no version
    erased = {**st.erased, **{i: plan.batch_id for i in ext.split.forget.ids.tolist()}}
    classes = {**st.forgotten_classes, **{str(c): plan.batch_id for c in ext.forget_classes}}
    n = len(ext.split.forget)
    with timed(timings, "snapshot"):
        msg = f"{plan.batch_id}: erase {n} samples ({plan.scenario} unlearning)"
        after = commit_snapshot(ws, st, ext.split.forget, erased, classes, msg)
    digest = model_digest(result.model)
    name = s.registry.model_name
    params = {
        "method": METHOD,
        **{f"rfa.{k}": v for k, v in s.rfa.model_dump().items()},
        **{f"lora.{k}": v for k, v in s.lora.model_dump().items()},
    }
    metrics = {
        **{f"unlearned.{k}": v for k, v in ev.unlearned.items()},
        **{f"original.{k}": v for k, v in ev.original.items()},
        "unlearn_seconds": result.seconds,
        "trainable_fraction": result.trainable_fraction,
    }
    with timed(timings, "register"):
        ref = reg.register(
            name,
            result.model,
            pinned.spec,
            _version_files(ext, result, ev),
            metrics,
            params,
            _version_tags(plan, pinned, ext, ev, after, digest),
            run_name=plan.batch_id,
            example=ext.test.x[:2],
        )
    try:
        run_id = reg.resolve(name, ref.version).run_id
        unlearned = {"version": ref.version, "digest": digest, "run_id": run_id}
        cert = certificate_for(ws, plan, pinned, ext, result, ev, after, unlearned)
        raw, cert_sha, sig = cert.to_json(), cert.digest(), sign(cert, key)
        reg.log_to_run(run_id, {"certificate.json": raw, "certificate.sig": sig.encode()})
        reg.set_tags(ref, {"certificate_sha256": cert_sha, "certificate_signature": sig})
        cert_file = ws.root / "audit" / "certificates" / name / f"v{ref.version}.json"
        cert_file.parent.mkdir(parents=True, exist_ok=True)
        cert_file.write_bytes(raw)
        commit_files(ws, [str(cert_file)], f"{plan.batch_id}: certificate of {ref}")
        reg.set_alias(ref, ALIAS_CANDIDATE)
    except Exception:
        reg.delete_version(ref)
        raise
    return ref, cert_sha


def release(store: RequestStore, plan: BatchPlan, reason: str) -> int:
    """Return a batch's requests to pending with the reason; they are never dropped."""
    return store.transition(plan.batch_id, "pending", reason=reason)
