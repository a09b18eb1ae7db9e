"""The deletion batch's Prefect tasks. Each takes plain values (the workspace path, the batch id,
request records, the pinned version and data revision, sample ids) and re-opens what it needs
from them: the workspace, the registry, the model version, the data snapshot at its git revision,
the unlearned weights in the batch's scratch folder. No connection or `nn.Module` crosses from
one task to the next, so a task runs as well in another process (a process pool task runner, or
a worker elsewhere that sees the workspace path) as in the flow's own.

Within one process the pinned champion and the extraction are loaded once per batch: both are
memoised on immutable keys (a version, its weights digest, a git revision, the sample ids), and
the flow clears the memo when the batch ends.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass
from datetime import timedelta
from functools import lru_cache
from pathlib import Path

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from components.unlearning.types import MethodConfig, UnlearnResult
from pipelines import batch as steps
from pipelines.progress import report
from pipelines.publish import publish
from pipelines.registry import VersionRef
from pipelines.store import RequestStore
from pipelines.workspace import Workspace


@dataclass(frozen=True)
class ForgetRef:
    """The batch's forget set as plain values; the tasks after extraction rebuild Df / Dr from it
    and the pinned snapshot (the manifest digest says it is the same set)."""

    ids: frozenset[str]
    forget_classes: tuple[int, ...]
    manifest_sha256: str


@dataclass(frozen=True)
class TrainedRef:
    """The unlearned model as files in the batch's scratch folder, and what training reported."""

    folder: str
    info: dict  # UnlearnResult's fields other than the model and the adapter


MODEL_FILE, ADAPTER_FILE = "model.safetensors", "adapter.safetensors"


def _settings_model(workspace: str) -> tuple[Workspace, str]:
    ws = Workspace(Path(workspace))
    return ws, ws.settings.registry.model_name


@lru_cache(maxsize=1)
def pinned(workspace: str, pin: steps.PinRef) -> steps.Pinned:
    """The pinned champion and snapshot, loaded (and its digest checked) once per process."""
    ws = Workspace(Path(workspace))
    return steps.load_pinned(ws, ws.registry(), pin)


@lru_cache(maxsize=1)
def _extracted(
    workspace: str, pin: steps.PinRef, ids: frozenset[str], classes: tuple[int, ...]
) -> steps.Extraction:
    """Df / Dr and the manifest (hashing every forgotten sample) once per process and batch."""
    limit = Workspace(Path(workspace)).settings.requests.max_forget_fraction
    return steps.extract(pinned(workspace, pin), ids, classes, limit)


def extraction(workspace: str, pin: steps.PinRef, forget: ForgetRef) -> steps.Extraction:
    ext = _extracted(workspace, pin, forget.ids, forget.forget_classes)
    if ext.manifest_sha256 != forget.manifest_sha256:  # the snapshot moved under the batch
        raise steps.BatchError(
            f"the forget set rebuilt from {pin.data_rev[:10]} is not the one extracted"
        )
    return ext


def forget_memo() -> None:
    """Drop the memoised champion and extraction (the batch is over: free their memory)."""
    pinned.cache_clear()
    _extracted.cache_clear()


def scratch(workspace: str, batch_id: str) -> Path:
    return Workspace(Path(workspace)).batch_dir(batch_id)


def save_result(result: UnlearnResult, folder: Path) -> TrainedRef:
    from safetensors.torch import save_file, save_model

    folder.mkdir(parents=True, exist_ok=True)
    save_model(result.model, str(folder / MODEL_FILE))
    save_file({k: v.contiguous() for k, v in result.adapter.items()}, str(folder / ADAPTER_FILE))
    info = {
        f.name: getattr(result, f.name)
        for f in dataclasses.fields(result)
        if f.name not in ("model", "adapter")
    }
    return TrainedRef(str(folder), info)


def load_result(base: steps.Pinned, trained: TrainedRef) -> UnlearnResult:
    """The unlearned model: the champion's architecture with the saved weights."""
    from safetensors.torch import load_file, load_model

    model = copy.deepcopy(base.model)
    load_model(model, str(Path(trained.folder) / MODEL_FILE))
    adapter = load_file(str(Path(trained.folder) / ADAPTER_FILE))
    return UnlearnResult(model=model.eval(), adapter=adapter, **trained.info)


# Tasks: results are small plain values held in memory; NO_CACHE, since what a batch produces
# lives in MLflow / DVC / git, never in Prefect's result store.


@task(name="plan-batch", cache_policy=NO_CACHE)
def plan_task(workspace: str, batch_id: str) -> steps.BatchPlan | None:
    ws, name = _settings_model(workspace)
    with RequestStore(ws.requests_db) as store:
        return steps.plan_batch(name, store, ws.registry(), batch_id)


@task(name="pin-snapshot", cache_policy=NO_CACHE)
def pin_task(workspace: str) -> steps.PinRef:
    ws, name = _settings_model(workspace)
    pin = steps.pin_ref(ws.registry(), name)
    pinned(workspace, pin)  # a digest mismatch or an unreadable snapshot stops the batch here
    return pin


@task(name="resolve-requests", cache_policy=NO_CACHE)
def resolve_task(workspace: str, pin: steps.PinRef, plan: steps.BatchPlan) -> steps.Resolution:
    return steps.resolve_requests(pinned(workspace, pin), plan)


@task(name="extract-forget-set", cache_policy=NO_CACHE)
def extract_task(
    workspace: str, pin: steps.PinRef, ids: frozenset[str], classes: tuple[int, ...]
) -> ForgetRef:
    return ForgetRef(ids, classes, _extracted(workspace, pin, ids, classes).manifest_sha256)


@task(name="unlearn-rfa", cache_policy=NO_CACHE)
def unlearn_task(
    workspace: str, pin: steps.PinRef, forget: ForgetRef, scenario: str, batch_id: str
) -> TrainedRef:
    logger = get_run_logger()

    def progress(step: int, total: int, values: dict[str, float]) -> None:
        report("unlearn", step, total)
        if step == total or step % max(1, total // 4) == 0:
            logger.info(
                "RFA step %d/%d  retain-loss %.4f  forget-loss %.4f",
                step,
                total,
                values.get("loss_retain", 0.0),
                values.get("loss_forget", 0.0),
            )

    ws, _ = _settings_model(workspace)
    s = ws.settings
    ext = extraction(workspace, pin, forget)
    cfg = MethodConfig(lora=s.lora, rfa=s.rfa)
    result = steps.unlearn(pinned(workspace, pin), ext, scenario, cfg, progress)
    return save_result(result, scratch(workspace, batch_id))


@task(name="evaluate-and-gate", cache_policy=NO_CACHE)
def assess_task(
    workspace: str, pin: steps.PinRef, forget: ForgetRef, trained: TrainedRef, scenario: str
) -> tuple[steps.Evaluation, dict[str, float]]:
    """The evaluation and the seconds of its parts (forward passes, attacks)."""
    ws, _ = _settings_model(workspace)
    s, seconds = ws.settings, {}
    base = pinned(workspace, pin)
    ext = extraction(workspace, pin, forget)
    result = load_result(base, trained)
    ev = steps.assess(
        base, ext, result, scenario, s.evaluation, s.gates, s.rfa.device, seconds, s.report
    )
    return ev, seconds


@task(name="register-candidate", cache_policy=NO_CACHE)
def publish_task(
    workspace: str,
    plan: steps.BatchPlan,
    pin: steps.PinRef,
    forget: ForgetRef,
    trained: TrainedRef,
    ev: steps.Evaluation,
) -> tuple[VersionRef, str, dict[str, float]]:
    """The candidate version, its certificate's sha256 and the seconds of the parts."""
    ws, _ = _settings_model(workspace)
    seconds: dict[str, float] = {}
    base = pinned(workspace, pin)
    ext = extraction(workspace, pin, forget)
    result = load_result(base, trained)
    ttl = timedelta(minutes=ws.settings.requests.batch_lease_minutes)

    def still_ours() -> None:  # LeaseLost if another run took the model over meanwhile
        with RequestStore(ws.requests_db) as store:
            store.touch_lease(ws.settings.registry.model_name, plan.batch_id, None, ttl)

    ref, sha = publish(ws, ws.registry(), plan, base, ext, result, ev, seconds, still_ours)
    return ref, sha, seconds
