"""The last step of a batch: commit the data snapshot without Df, register the unlearned version
with its certificate and alias it `candidate`; nothing half-written survives a failure."""

from __future__ import annotations

from collections.abc import Callable

from components.canonical import canonical_json, sha256_hex
from components.certificate import SUBJECT_PREFIX, Certificate, build_certificate, subject_key
from components.models import model_digest
from components.runtime import timed
from components.settings import Settings
from components.unlearning.types import UnlearnResult
from pipelines.batch import METHOD, BatchPlan, Evaluation, Extraction, Pinned
from pipelines.batch_report import (
    Report,
    attach_to_run,
    build,
    describe_version,
    publish_to_prefect,
)
from pipelines.identity import whoami
from pipelines.keys import require_signer, sign_as, subject_secret
from pipelines.provenance import code_version, package_versions
from pipelines.registry import ALIAS_CANDIDATE, Registry, VersionRef
from pipelines.snapshot import SnapshotInfo, commit_files, commit_snapshot
from pipelines.workspace import Workspace, utcnow


def keyed_digest(subject_id: str) -> str:
    """The keyed hash (hex) of a stored subject id (keyed at intake; older stores: keyed now)."""
    secret = subject_secret() if not subject_id.startswith(SUBJECT_PREFIX) else b""
    return subject_key(subject_id, secret).removeprefix(SUBJECT_PREFIX)


def _request_facts(plan: BatchPlan) -> list[dict]:
    out = []
    for r in plan.requests:
        fact = {
            "id": r.id,
            "kind": r.kind,
            "received_at": r.received_at,
            "deadline": r.deadline,
            "n_samples": r.n_samples,
            "submitted_by": r.submitted_by,
        }
        if r.request.kind == "subject":
            fact["subject_sha256"] = keyed_digest(r.request.subject_id or "")
        if r.request.kind == "class":
            fact["class_label"] = r.request.class_label
        out.append(fact)
    return out


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
    files: dict[str, bytes],
) -> Certificate:
    """The batch's certificate: requests, forget manifest, both data snapshots, both models, the
    method as run, the code, the evaluation and the gates."""
    s, st = ws.settings, pinned.state
    name = s.registry.model_name
    return build_certificate(
        batch={"id": plan.batch_id, "scenario": plan.scenario, "created_at": utcnow(),
               "ran_by": whoami()},
        requests=_request_facts(plan),
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
        policy={
            "gates": ws.settings.gates.model_dump(mode="json"),
            "max_forget_fraction": ws.settings.requests.max_forget_fraction,
        },
        artifacts={k: sha256_hex(v) for k, v in files.items() if k in CERTIFIED_FILES},
    )  # fmt: skip


def _version_tags(
    plan: BatchPlan,
    pinned: Pinned,
    ext: Extraction,
    ev: Evaluation,
    after: SnapshotInfo,
    digest: str,
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
        "batch.ran_by": whoami(),  # who may not approve it (separation of duties)
    }


# The version's files the certificate hashes (the manifest has its own field; the model's weights
# are bound by their digest).
CERTIFIED_FILES = ("adapter.safetensors", "gates.json", "metrics.json")


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


def batch_report(
    plan: BatchPlan,
    pinned: Pinned,
    ev: Evaluation,
    result: UnlearnResult,
    ref: VersionRef,
    cert_sha: str,
) -> Report:
    """The report of a certified candidate: what the reviewer approves is named by its hash."""
    facts = {
        "certificate sha256": cert_sha,
        "base version": str(pinned.base),
        "method": f"{METHOD}: {result.steps} steps on {result.device}, stopped by "
        f"{result.stop_reason}, {result.seconds:.1f} s",
        "trainable share": f"{100 * result.trainable_fraction:.2f} %",
    }
    return build(plan, ev, f"{ref.name} version {ref.version}", "awaiting approval", facts)


def _run_record(s: Settings, ev: Evaluation, result: UnlearnResult) -> tuple[dict, dict]:
    """The MLflow run's params (the method's settings) and metrics (both models' evaluation)."""
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
    return params, metrics


def publish(
    ws: Workspace,
    reg: Registry,
    plan: BatchPlan,
    pinned: Pinned,
    ext: Extraction,
    result: UnlearnResult,
    ev: Evaluation,
    timings: dict[str, float] | None = None,
    still_ours: Callable[[], None] = lambda: None,
) -> tuple[VersionRef, str]:
    """Commit the data snapshot without Df, register the unlearned version with its certificate,
    alias it `candidate`. A version that cannot be completed is deleted again.

    `still_ours` raises if the batch lost its model's lease; it runs just before the alias, the
    step that makes the version a result: a batch taken over while it published leaves no
    candidate beside the taker's."""
    s = ws.settings
    st = pinned.state
    require_signer(ws, "batch")  # before any write: no key, no certificate, no version
    erased = {**st.erased, **dict.fromkeys(ext.split.forget.ids.tolist(), plan.batch_id)}
    classes = {**st.forgotten_classes, **{str(c): plan.batch_id for c in ext.forget_classes}}
    n = len(ext.split.forget)
    with timed(timings, "snapshot"):
        msg = f"{plan.batch_id}: erase {n} samples ({plan.scenario} unlearning)"
        subjects = {
            keyed_digest(r.request.subject_id or ""): plan.batch_id
            for r in plan.requests
            if r.request.kind == "subject"
        }
        after = commit_snapshot(ws, st, ext.split.forget, erased, classes, msg, subjects)
    digest = model_digest(result.model)
    name = s.registry.model_name
    params, metrics = _run_record(s, ev, result)
    files = _version_files(ext, result, ev)
    with timed(timings, "register"):
        ref = reg.register(
            name,
            result.model,
            pinned.spec,
            files,
            metrics,
            params,
            _version_tags(plan, pinned, ext, ev, after, digest),
            run_name=plan.batch_id,
            example=ext.test.x[:2],
        )
    try:
        run_id = reg.resolve(name, ref.version).run_id
        unlearned = {"version": ref.version, "digest": digest, "run_id": run_id}
        cert = certificate_for(ws, plan, pinned, ext, result, ev, after, unlearned, files)
        raw, cert_sha = cert.to_json(), cert.digest()
        sig, public = sign_as(ws, "batch", raw)
        files = {"certificate.json": raw, "certificate.sig": sig.encode()}
        if public is not None:  # an auditor verifies offline with the version's own files
            files["certificate.pub"] = public
        reg.log_to_run(run_id, files)
        reg.set_tags(ref, {"certificate_sha256": cert_sha, "certificate_signature": sig})
        cert_file = ws.root / "audit" / "certificates" / name / f"v{ref.version}.json"
        cert_file.parent.mkdir(parents=True, exist_ok=True)
        cert_file.write_bytes(raw)
        cert_file.with_suffix(".sig").write_text(sig)
        copies = [str(cert_file), str(cert_file.with_suffix(".sig"))]
        commit_files(ws, copies, f"{plan.batch_id}: certificate of {ref}")
        with timed(timings, "report"):
            report = batch_report(plan, pinned, ev, result, ref, cert_sha)
            attach_to_run(reg, run_id, ev, report)
            describe_version(reg, ref, report.context, run_id)
            publish_to_prefect(report.context)
        still_ours()
        reg.set_alias(ref, ALIAS_CANDIDATE)
    except Exception:
        reg.delete_version(ref)
        raise
    return ref, cert_sha
