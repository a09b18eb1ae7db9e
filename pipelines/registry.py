"""MLflow adapter: log and register model versions with lineage, load them back, move aliases.

A version's source is the run's `model/` folder, a real MLflow pyfunc model: `MLmodel` (with a
signature and an input example), the model code (pipelines/pyfunc_model.py, models from code: no
pickle), `artifacts/spec.json` and `artifacts/weights.safetensors`, so
`mlflow.pyfunc.load_model("models:/NAME@champion")` and `mlflow models serve` work on it. Beside
them, for unlearned versions: `adapter.safetensors`, `forget_manifest.json`, `certificate.json`,
`certificate.sig`, `gates.json`, `metrics.json`.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import TYPE_CHECKING, Any

from components.models import ModelError, load_model, state_bytes
from pipelines.tracking import open_client

if TYPE_CHECKING:
    import numpy as np
    from mlflow.entities.model_registry import ModelVersion
    from mlflow.tracking import MlflowClient
    from torch import nn

PYFUNC_CODE = Path(__file__).resolve().parent / "pyfunc_model.py"
COMPONENTS = Path(__file__).resolve().parent.parent / "components"
SPEC_FILE, WEIGHTS_FILE = "artifacts/spec.json", "artifacts/weights.safetensors"
ALIAS_CHAMPION = "champion"
ALIAS_CANDIDATE = "candidate"


class RegistryError(RuntimeError):
    """The tracking server is unreachable, or a model version / artifact is missing."""


class StoreUnavailable(RegistryError):
    """The tracking store itself cannot be used: not "no such version", whatever was asked."""


@dataclass(frozen=True)
class VersionRef:
    name: str
    version: str

    def __str__(self) -> str:
        return f"{self.name}/{self.version}"


def refused_credentials(err: Exception, uri: str) -> None:
    """An authenticating tracking server (basic-auth) that refused the caller's credentials:
    StoreUnavailable, not "no such version". (Its 403 also means "no such model": left alone.)"""
    if getattr(err, "error_code", "") == "UNAUTHENTICATED" or " 401 " in str(err):
        user = os.environ.get("MLFLOW_TRACKING_USERNAME", "") or "(no user)"
        raise StoreUnavailable(
            f"the MLflow server at {uri} refused {user}: check MLFLOW_TRACKING_USERNAME and "
            "MLFLOW_TRACKING_PASSWORD"
        ) from None


def data_rev(tags: dict) -> str | None:
    """The data snapshot a version stands on: the one its batch left (unlearned versions) or the
    one it was trained on (base versions)."""
    return tags.get("data.after_rev") or tags.get("data.rev")


def parse_ref(text: str) -> tuple[str, str | None, str | None]:
    """'name@alias' -> (name, None, alias); 'name/3' or 'name:3' -> (name, '3', None)."""
    if "@" in text:
        name, alias = text.split("@", 1)
        return name, None, alias
    for sep in ("/", ":"):
        if sep in text:
            name, version = text.rsplit(sep, 1)
            return name, version, None
    raise RegistryError(f"cannot read model reference {text!r}; use NAME@ALIAS or NAME/VERSION")


def _set_fluent_uri(uri: str) -> None:
    """mlflow.set_tracking_uri also exports MLFLOW_TRACKING_URI; restore it, because that variable
    is the user's choice of server (Workspace.tracking_uri reads it), not our process state."""
    import os

    import mlflow

    before = os.environ.get("MLFLOW_TRACKING_URI")
    mlflow.set_tracking_uri(uri)
    if before is None:
        os.environ.pop("MLFLOW_TRACKING_URI", None)
    else:
        os.environ["MLFLOW_TRACKING_URI"] = before


class Registry:
    def __init__(
        self, tracking_uri: str, experiment: str, artifact_location: str | None = None
    ) -> None:
        self.tracking_uri = tracking_uri
        self.experiment = experiment
        self.artifact_location = artifact_location
        self._client = None

    # --- connection -------------------------------------------------------------------------

    def check_available(self) -> None:
        """Fail in one line when an HTTP tracking server is down; a transient failure (a 5xx, a
        refused connection during a restart) is retried as MLflow retries its own calls."""
        if not self.tracking_uri.startswith(("http://", "https://")):
            return
        url = self.tracking_uri.rstrip("/") + "/health"
        retries = int(os.environ.get("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0") or 0)
        backoff = float(os.environ.get("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", "1") or 1)
        for attempt in range(retries + 1):
            try:
                with urllib.request.urlopen(url, timeout=5):
                    return  # urlopen raises on any status but 2xx / 3xx
            except (urllib.error.URLError, OSError) as err:
                reason = getattr(err, "reason", err)
            if attempt < retries:
                time.sleep(backoff * 2**attempt)
        raise StoreUnavailable(
            f"MLflow tracking server at {self.tracking_uri} is unreachable ({reason}); start "
            "it or unset MLFLOW_TRACKING_URI"
        )

    @property
    def client(self) -> MlflowClient:
        if self._client is None:
            self.check_available()
            _set_fluent_uri(self.tracking_uri)
            self._client = open_client(self.tracking_uri, StoreUnavailable)
        return self._client

    def activate(self) -> None:
        """Point mlflow's fluent API (start_run, download_artifacts) at this registry's store:
        another Registry in the same process may have pointed it elsewhere."""
        _ = self.client  # connect / health check first
        _set_fluent_uri(self.tracking_uri)

    def experiment_id(self) -> str:
        exp = self.client.get_experiment_by_name(self.experiment)
        if exp is not None:
            return exp.experiment_id
        return self.client.create_experiment(
            self.experiment, artifact_location=self.artifact_location
        )

    # --- versions ---------------------------------------------------------------------------

    def resolve(
        self, name: str, version: str | None = None, alias: str | None = None
    ) -> ModelVersion:
        """The ModelVersion for name + version or alias; RegistryError naming what is missing."""
        from mlflow.exceptions import MlflowException

        try:
            if alias is not None:
                return self.client.get_model_version_by_alias(name, alias)
            return self.client.get_model_version(name, str(version))
        except MlflowException as err:
            refused_credentials(err, self.tracking_uri)
            what = f"alias {alias!r}" if alias is not None else f"version {version}"
            raise RegistryError(
                f"model {name!r} has no {what} in the registry at {self.tracking_uri}"
            ) from None

    def champion(self, name: str) -> ModelVersion:
        return self.resolve(name, alias=ALIAS_CHAMPION)

    def has_alias(self, name: str, alias: str) -> bool:
        try:
            self.resolve(name, alias=alias)
            return True
        except StoreUnavailable:
            raise
        except RegistryError:
            return False

    def versions(self, name: str) -> list:
        from mlflow.exceptions import MlflowException

        try:
            return sorted(
                self.client.search_model_versions(f"name='{name}'"), key=lambda v: int(v.version)
            )
        except MlflowException:
            return []

    def register(
        self,
        name: str,
        model: nn.Module,
        spec: dict,
        files: dict[str, bytes],
        metrics: dict[str, float],
        params: dict[str, Any],
        tags: dict[str, str],
        run_name: str,
        example: Any,
        dataset: Any = None,
    ) -> VersionRef:
        """One MLflow run with the model (a pyfunc model plus our files), then a registered version
        pointing at it. `example`: a few input images (uint8 NCHW) for the signature and example.
        If registering fails, the run is marked FAILED and no version is left behind."""
        import mlflow
        from mlflow.exceptions import MlflowException

        self.activate()
        exp_id = self.experiment_id()
        with tempfile.TemporaryDirectory() as tmp:
            d = Path(tmp) / "model"
            save_pyfunc(d, model, spec, example, Path(tmp) / "staging")
            for fname, data in files.items():
                (d / fname).write_bytes(data)
            with mlflow.start_run(experiment_id=exp_id, run_name=run_name) as run:
                mlflow.log_params({k: str(v)[:500] for k, v in params.items()})
                mlflow.log_metrics(
                    {k: float(v) for k, v in metrics.items() if v is not None and v == v}
                )
                mlflow.set_tags(tags)
                if dataset is not None:
                    mlflow.log_input(dataset, context="training")
                mlflow.log_artifacts(str(d), artifact_path="model")
                source = mlflow.get_artifact_uri("model")
                run_id = run.info.run_id
        try:
            try:
                self.client.get_registered_model(name)
            except MlflowException:
                self.client.create_registered_model(
                    name, description="Models certified by the unlearning pipeline"
                )
            mv = self.client.create_model_version(name, source=source, run_id=run_id, tags=tags)
        except MlflowException as err:
            self.client.set_terminated(run_id, status="FAILED")
            raise RegistryError(f"registering {name} failed: {err}") from None
        return VersionRef(name, str(mv.version))

    def delete_version(self, ref: VersionRef) -> None:
        self.client.delete_model_version(ref.name, ref.version)

    def delete_weights(self, ref: VersionRef) -> list[str]:
        """Delete a version's weight files from its run's artifacts (through MLflow's artifact
        repository: local, S3, proxied...) and the version from the registry; what was deleted.
        The certificate and manifest stay: they are the audit trail."""
        from mlflow.store.artifact.artifact_repository_registry import get_artifact_repository

        mv = self.resolve(ref.name, ref.version)
        repo = get_artifact_repository(self.client.get_run(mv.run_id).info.artifact_uri)
        gone = [f"model/{WEIGHTS_FILE}", "model/adapter.safetensors"]
        for path in gone:
            repo.delete_artifacts(path)
        self.client.delete_model_version(ref.name, ref.version)
        return gone

    def set_tags(self, ref: VersionRef, tags: dict[str, str], run_id: str | None = None) -> None:
        """Tags on the version, and on its run too when given (a decision: the run's status
        must not keep saying awaiting_approval)."""
        for k, v in tags.items():
            self.client.set_model_version_tag(ref.name, ref.version, k, v)
            if run_id:
                self.client.set_tag(run_id, k, v)

    def set_alias(self, ref: VersionRef, alias: str) -> None:
        self.client.set_registered_model_alias(ref.name, alias, ref.version)

    def drop_alias(self, name: str, alias: str) -> None:
        if self.has_alias(name, alias):
            self.client.delete_registered_model_alias(name, alias)

    # --- artifacts --------------------------------------------------------------------------

    def download(self, ref: VersionRef, dst: Path) -> Path:
        """Download a version's artifact folder; RegistryError if it is gone."""
        import mlflow

        mv = self.resolve(ref.name, ref.version)
        self.activate()
        try:
            return Path(
                mlflow.artifacts.download_artifacts(artifact_uri=mv.source, dst_path=str(dst))
            )
        except Exception as err:
            raise RegistryError(f"artifacts of {ref} cannot be downloaded: {err}") from None

    def load_model(self, ref: VersionRef) -> tuple[nn.Module, dict]:
        """(model, spec) of a version, rebuilt from spec + safetensors (no pickle)."""
        with tempfile.TemporaryDirectory() as tmp:
            d = self.download(ref, Path(tmp))
            try:
                return read_model_dir(d)
            except ModelError as err:
                raise ModelError(f"{ref}: {err}") from None

    def fail_runs(self, batch_id: str) -> list[str]:
        """Mark the runs of a batch that never finished (still RUNNING) as FAILED."""
        exp = self.client.get_experiment_by_name(self.experiment)
        if exp is None:
            return []
        runs = self.client.search_runs(
            [exp.experiment_id], f"tags.batch_id = '{batch_id}' and attributes.status = 'RUNNING'"
        )
        for run in runs:
            self.client.set_terminated(run.info.run_id, status="FAILED")
        return [r.info.run_id for r in runs]

    def log_run(
        self, run_name: str, tags: dict[str, str], metrics: dict[str, float], docs: dict[str, Any]
    ) -> str:
        """A run with no model (e.g. a batch whose gates failed): tags, metrics and JSON documents
        (file name -> content). Returns the run id."""
        import mlflow

        self.activate()
        with mlflow.start_run(experiment_id=self.experiment_id(), run_name=run_name) as run:
            mlflow.set_tags(tags)
            mlflow.log_metrics(metrics)
            for fname, doc in docs.items():
                mlflow.log_dict(doc, fname)
            return run.info.run_id

    def log_to_run(self, run_id: str, files: dict[str, bytes], folder: str = "model") -> None:
        with tempfile.TemporaryDirectory() as tmp:
            for fname, data in files.items():
                (Path(tmp) / fname).write_bytes(data)
            self.client.log_artifacts(run_id, tmp, artifact_path=folder)


def read_model_dir(d: Path) -> tuple[nn.Module, dict]:
    """(model, spec) from a downloaded version folder: spec + safetensors, never pickle."""
    try:
        spec = json.loads((d / SPEC_FILE).read_text())
        weights = (d / WEIGHTS_FILE).read_bytes()
    except (OSError, json.JSONDecodeError) as err:
        raise ModelError(f"model artifacts unreadable ({err})") from None
    return load_model(spec, weights), spec


def _code_paths(spec: dict) -> list[str]:
    """What the pyfunc model needs at load time besides mlflow and torch: our pure components/
    package, and a user's own architecture module when it is not an installed package."""
    import importlib.util
    import sysconfig

    paths = [str(COMPONENTS)]
    builder = spec.get("builder")
    if builder:
        top = builder.split(":")[0].split(".")[0]
        found = importlib.util.find_spec(top)
        origin = Path(found.origin) if found and found.origin else None
        site = Path(sysconfig.get_paths()["purelib"])
        if origin is not None and site not in origin.parents:
            paths.append(str(origin.parent if origin.name == "__init__.py" else origin))
    return paths


def save_pyfunc(d: Path, model: nn.Module, spec: dict, example: np.ndarray, staging: Path) -> None:
    """Write `d` as an MLflow pyfunc model: models-from-code script, spec and safetensors weights,
    a tensor signature inferred from `example` and the model's own output on it."""
    import numpy as np
    import torch

    from components.models import to_input

    staging.mkdir(parents=True, exist_ok=True)
    (staging / "weights.safetensors").write_bytes(state_bytes(model))
    (staging / "spec.json").write_text(json.dumps(spec, indent=1, sort_keys=True))
    example = np.ascontiguousarray(np.asarray(example, dtype=np.uint8))
    with torch.no_grad():
        out = model.eval()(to_input(example)).float().numpy()
    reqs = [
        f"{p}=={metadata.version(p)}"
        for p in ("mlflow", "torch", "numpy", "safetensors", "pydantic", "pyyaml")
    ]
    import mlflow.pyfunc
    from mlflow.models import infer_signature

    mlflow.pyfunc.save_model(
        path=str(d),
        python_model=str(PYFUNC_CODE),
        artifacts={
            "spec": str(staging / "spec.json"),
            "weights": str(staging / "weights.safetensors"),
        },
        code_paths=_code_paths(spec),
        signature=infer_signature(example, out),
        input_example=example,
        pip_requirements=reqs,
    )
