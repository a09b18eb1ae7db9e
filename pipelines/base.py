"""The `train` step: train the base model on the committed snapshot and register it as champion.

This is what `dvc.yaml`'s `train_base` stage runs (`unlearn train`), so `dvc repro` and the demo
train the base model through the same code path.
"""

from __future__ import annotations

import json

from components.data import Split
from components.metrics import accuracy, predict
from components.models import build_model, model_digest, spec_from_settings
from components.runtime import ProgressFn, no_progress, resolve_device, set_seed
from components.training import train_classifier
from pipelines.aliases import champion_from
from pipelines.provenance import code_version, package_versions
from pipelines.registry import ALIAS_CHAMPION, VersionRef
from pipelines.snapshot import head_rev, read_state
from pipelines.workspace import Workspace, WorkspaceError


def _mlflow_dataset(train: Split, digest: str, name: str):
    import mlflow.data

    return mlflow.data.from_numpy(train.x, targets=train.y, name=name, digest=digest[:32])


def train_base(
    ws: Workspace, replace_champion: bool = False, progress: ProgressFn = no_progress
) -> tuple[VersionRef, dict]:
    """Train on the snapshot at HEAD, write reports/base_metrics.json, register, alias champion."""
    s = ws.settings
    reg = ws.registry()
    name = s.registry.model_name
    if reg.has_alias(name, ALIAS_CHAMPION) and not replace_champion:
        cur = reg.champion(name)
        raise WorkspaceError(
            f"{name} already has a champion (version {cur.version}); pass --replace-champion to "
            "register a new base model"
        )
    if ws.git("status", "--porcelain", "--", "data"):
        raise WorkspaceError(
            "data/ has uncommitted changes; commit the snapshot before training on it"
        )
    state = read_state(ws, head_rev(ws))
    spec = spec_from_settings(
        s.model, state.train.x, int(max(state.train.y.max(), state.test.y.max())) + 1
    )
    set_seed(s.train.seed)  # before the model is built: weight init is part of the run
    model = build_model(spec)
    device = resolve_device(s.rfa.device)
    info = train_classifier(model, state.train, s.train, device, progress)
    model = model.to("cpu").eval()
    metrics = {
        "acc_train": accuracy(predict(model, state.train, device)),
        "acc_test": accuracy(predict(model, state.test, device)),
        "acc_heldout": accuracy(predict(model, state.heldout, device)),
        "train_seconds": info["seconds"],
    }
    (ws.root / "reports").mkdir(exist_ok=True)
    (ws.root / "reports" / "base_metrics.json").write_text(
        json.dumps(metrics, indent=1, sort_keys=True) + "\n"
    )
    digest = model_digest(model)
    tags = {
        "kind": "base",
        "status": "base",
        "data.rev": state.info.git_rev,
        "data.dvc_md5": state.info.dvc_md5,
        "data.dataset_sha256": state.info.dataset_sha256,
        "model_digest": digest,
        "code_version": code_version(),
    }
    params = {
        **{f"train.{k}": v for k, v in s.train.model_dump().items()},
        **{f"model.{k}": v for k, v in s.model.model_dump().items()},
        **{f"pkg.{k}": v for k, v in package_versions().items()},
    }
    ref = reg.register(
        name,
        model,
        spec,
        {},
        metrics,
        params,
        tags,
        run_name="base-model",
        example=state.test.x[:2],
        dataset=_mlflow_dataset(state.train, state.info.dataset_sha256, f"{name}-train"),
    )
    champion_from(ws, reg, ref, "unlearn train")
    return ref, metrics
