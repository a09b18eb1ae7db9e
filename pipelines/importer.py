"""`unlearn model import`: make an existing, pre-trained model the workspace's champion.

The weights come from a checkpoint file (state dict or safetensors, read weights-only) or from an
MLflow model URI in the user's own tracking server; the architecture from params.yaml's `model`
section (a built-in one or the user's `package.module:builder`). The version is registered exactly
like a trained base (same tags, same pyfunc model), plus where its weights came from and which
data the user declares it was trained on; the first deletion batch then runs as on a trained base.
"""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import numpy as np
import torch
from torch import nn

from components.canonical import sha256_hex
from components.checkpoints import check_layers, fit_state_dict, read_checkpoint
from components.data import split_hashes
from components.metrics import accuracy, predict
from components.models import ModelError, build_model, model_digest, spec_from_settings
from components.runtime import resolve_device
from pipelines.aliases import champion_from
from pipelines.provenance import code_version, package_versions
from pipelines.registry import ALIAS_CHAMPION, Registry, RegistryError, VersionRef, read_model_dir
from pipelines.snapshot import DataState, git_show, head_rev, read_state
from pipelines.workspace import Workspace, WorkspaceError

# What the model saw: every file of the source's training set (a checkpoint trained elsewhere),
# or only the workspace's train split (a model trained on exactly this carve).
TRAINED_ON = ("train-files", "train-split")
WEIGHT_SUFFIXES = (".safetensors", ".pth", ".pt", ".bin", ".th", ".ckpt")


def check_declared_training_data(ws: Workspace, state: DataState, trained_on: str) -> None:
    """Dt and the heldout reference must hold no sample the model was trained on: by where the
    split was taken from (data/splits.json) and by content (a duplicated image)."""
    if trained_on not in TRAINED_ON:
        raise WorkspaceError(f"--trained-on must be one of {list(TRAINED_ON)}, not {trained_on!r}")
    origins = json.loads(git_show(ws, state.info.git_rev, "data/splits.json") or "{}").get(
        "origins", {}
    )
    if trained_on == "train-files":
        carved = [
            name
            for name in ("heldout", "test")
            if origins.get(name, "train-files") == "train-files"
        ]
        if carved:
            raise WorkspaceError(
                f"the {' and '.join(carved)} split{'s were' if len(carved) > 1 else ' was'} carved "
                "from the training files this "
                "model was trained on, so it would count seen data as unseen; re-create the "
                "workspace with data.heldout_from: "
                "test (and a source with a test split), or pass --trained-on train-split if the "
                "model saw only this train split"
            )
    seen = set(split_hashes(state.train))
    for name, split in (("heldout", state.heldout), ("test", state.test)):
        dup = [i for i, h in zip(split.ids.tolist(), split_hashes(split), strict=True) if h in seen]
        if dup:
            raise WorkspaceError(
                f"{len(dup)} {name} samples (e.g. {dup[0]!r}) have the same pixels and label as "
                "training "
                "samples; the model has seen them, so they cannot serve as unseen data"
            )


def _weights_from_file(model: nn.Module, path: Path) -> tuple[nn.Module, dict[str, str]]:
    fitted = fit_state_dict(model, read_checkpoint(path), f"checkpoint {path}")
    return fitted, {
        "source": "checkpoint",
        "source.file": path.name,
        "source.sha256": sha256_hex(path.read_bytes()),
    }


def _resolve_uri(uri: str, tracking_uri: str) -> tuple[dict[str, str], str]:
    """Which model version or run a URI names in the source tracking server (one line if not),
    and where its files are (a registered version's source: the registry lookup is done here,
    against that server, not against whatever registry the process points at)."""
    from mlflow import MlflowClient
    from mlflow.exceptions import MlflowException

    Registry(tracking_uri, "unused").check_available()
    client = MlflowClient(tracking_uri)
    facts = {
        "source": "mlflow",
        "source.uri": uri,
        "source.tracking_uri": tracking_uri.split("@")[-1],
    }
    try:
        if uri.startswith("models:/"):
            name, _, rest = uri.removeprefix("models:/").partition("@")
            mv = (
                client.get_model_version_by_alias(name, rest)
                if rest
                else client.get_model_version(*name.rsplit("/", 1))
            )
            facts.update(
                {
                    "source.model": mv.name,
                    "source.version": str(mv.version),
                    "source.run_id": mv.run_id or "",
                }
            )
            files = mv.source
        elif uri.startswith("runs:/"):
            facts["source.run_id"] = client.get_run(
                uri.removeprefix("runs:/").split("/")[0]
            ).info.run_id
            files = uri
        else:
            raise RegistryError(
                f"model URI {uri!r}: use models:/NAME@ALIAS, models:/NAME/VERSION or "
                "runs:/RUN_ID/PATH"
            )
    except (MlflowException, ValueError, TypeError) as err:
        msg = str(err).strip().splitlines()[0][:200] if str(err).strip() else type(err).__name__
        raise RegistryError(f"model URI {uri} does not resolve in {tracking_uri}: {msg}") from None
    return facts, files


def _weights_from_uri(
    model: nn.Module, uri: str, tracking_uri: str, tmp: Path
) -> tuple[nn.Module, dict[str, str]]:
    """Our own pyfunc layout (spec + safetensors), else one state-dict file among the artifacts
    (e.g. `mlflow.pytorch.log_state_dict`); a pickled whole module is refused, never unpickled."""
    import mlflow.artifacts

    facts, files = _resolve_uri(uri, tracking_uri)
    try:
        d = Path(
            mlflow.artifacts.download_artifacts(
                artifact_uri=files, dst_path=str(tmp), tracking_uri=tracking_uri
            )
        )
    except Exception as err:
        raise RegistryError(
            f"artifacts of {uri} cannot be downloaded from {tracking_uri}: "
            f"{str(err).splitlines()[0][:200]}"
        ) from None
    if (d / "artifacts" / "spec.json").is_file():
        theirs, _ = read_model_dir(d)
        return fit_state_dict(model, theirs.state_dict(), f"{uri}"), facts
    files = [p for p in sorted(d.rglob("*")) if p.is_file() and p.suffix in WEIGHT_SUFFIXES]
    if len(files) != 1:
        found = ", ".join(p.relative_to(d).as_posix() for p in files[:5]) or "none"
        raise ModelError(
            f"{uri}: expected one state-dict or safetensors file among its artifacts, found "
            f"{found}; log the "
            "weights with mlflow.pytorch.log_state_dict or as safetensors"
        )
    fitted, _ = _weights_from_file(model, files[0])
    return fitted, {
        **facts,
        "source.file": files[0].name,
        "source.sha256": sha256_hex(files[0].read_bytes()),
    }


def _check_outputs(model: nn.Module, state: DataState) -> int:
    """The model's number of classes, from one forward pass; every label must be one of them."""
    from components.models import to_input

    try:
        with torch.no_grad():
            out = model.eval()(to_input(state.test.x[:2]))
    except Exception as err:
        raise ModelError(
            f"the model cannot run on this workspace's images {tuple(state.test.x.shape[1:])} "
            f"(C, H, W): {type(err).__name__}: {str(err).splitlines()[0][:200]}"
        ) from None
    if out.ndim != 2:
        raise ModelError(
            f"the model returns shape {tuple(out.shape)} for a batch of 2; it must return logits "
            "(N, classes)"
        )
    k = int(out.shape[1])
    top = int(max(state.train.y.max(), state.test.y.max(), state.heldout.y.max()))
    if top >= k:
        raise ModelError(
            f"labels outside the model's classes: the data has label {top}, the model predicts {k} "
            f"classes (0..{k - 1})"
        )
    return k


def _accuracies(model: nn.Module, state: DataState, device: torch.device) -> dict[str, float]:
    """What a reviewer checks first: the model scores as its owner says on this data."""
    rng = np.random.default_rng(0)
    pick = rng.choice(len(state.train), min(2000, len(state.train)), replace=False)
    return {
        "acc_train_sample": accuracy(predict(model, state.train.take(np.sort(pick)), device)),
        "acc_test": accuracy(predict(model, state.test, device)),
        "acc_heldout": accuracy(predict(model, state.heldout, device)),
    }


def import_model(
    ws: Workspace,
    checkpoint: Path | None = None,
    uri: str | None = None,
    tracking_uri: str | None = None,
    trained_on: str = "train-files",
    replace_champion: bool = False,
) -> tuple[VersionRef, dict]:
    """Register an existing model as champion without training. Changes nothing on any error."""
    s = ws.settings
    if (checkpoint is None) == (uri is None):
        raise WorkspaceError("give exactly one of --checkpoint FILE or --uri MODEL_URI")
    reg = ws.registry()
    name = s.registry.model_name
    if reg.has_alias(name, ALIAS_CHAMPION) and not replace_champion:
        raise WorkspaceError(
            f"{name} already has a champion (version {reg.champion(name).version}); pass "
            "--replace-champion"
        )
    if ws.git("status", "--porcelain", "--", "data"):
        raise WorkspaceError(
            "data/ has uncommitted changes; commit the snapshot before importing a model trained "
            "on it"
        )
    state = read_state(ws, head_rev(ws))
    check_declared_training_data(ws, state, trained_on)
    num_classes = int(max(state.train.y.max(), state.test.y.max())) + 1
    spec = spec_from_settings(s.model, state.train.x, num_classes)
    model = build_model(spec)
    with tempfile.TemporaryDirectory() as tmp:
        if checkpoint is not None:
            model, source = _weights_from_file(model, Path(checkpoint))
        else:
            model, source = _weights_from_uri(
                model, uri or "", tracking_uri or reg.tracking_uri, Path(tmp)
            )
    k = _check_outputs(model, state)
    check_layers(model, s.lora.target_modules, tuple(s.rfa.taps))
    metrics = _accuracies(model, state, resolve_device(s.rfa.device))
    model = model.to("cpu").eval()
    tags = {
        "kind": "base",
        "status": "base",
        "origin": "imported",
        **source,
        "data.rev": state.info.git_rev,
        "data.dvc_md5": state.info.dvc_md5,
        "data.dataset_sha256": state.info.dataset_sha256,
        "data.trained_on": trained_on,
        "model_digest": model_digest(model),
        "code_version": code_version(),
    }
    params = {
        **{f"model.{k_}": v for k_, v in s.model.model_dump().items()},
        "num_outputs": k,
        **{f"pkg.{k_}": v for k_, v in package_versions().items()},
    }
    ref = reg.register(
        name,
        model,
        spec,
        {},
        metrics,
        params,
        tags,
        run_name="imported-model",
        example=state.test.x[:2],
    )
    champion_from(ws, reg, ref, "unlearn model import")
    return ref, {**metrics, **source}
