"""MLflow adapter: log and register model versions with lineage, load them back, move aliases.

A version's artifacts (under the run's `model/` folder): `weights.safetensors`, `spec.json`,
and for unlearned versions `adapter.safetensors`, `forget_manifest.json`, `certificate.json`,
`certificate.sig`, `gates.json`, `metrics.json`. The weights load without pickle.
"""

from __future__ import annotations

import json
import tempfile
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from components.models import ModelError, load_model, state_bytes

ALIAS_CHAMPION = "champion"
ALIAS_CANDIDATE = "candidate"


class RegistryError(RuntimeError):
    """The tracking server is unreachable, or a model version / artifact is missing."""


@dataclass(frozen=True)
class VersionRef:
    name: str
    version: str

    def __str__(self) -> str:
        return f"{self.name}/{self.version}"


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
    def __init__(self, tracking_uri: str, experiment: str, artifact_location: str | None = None) -> None:
        self.tracking_uri = tracking_uri
        self.experiment = experiment
        self.artifact_location = artifact_location
        self._client = None

    # --- connection -------------------------------------------------------------------------

    def check_available(self) -> None:
        """Fail fast, in one line, when an HTTP tracking server is down."""
        if not self.tracking_uri.startswith(("http://", "https://")):
            return
        url = self.tracking_uri.rstrip("/") + "/health"
        try:
            with urllib.request.urlopen(url, timeout=5) as resp:
                if resp.status != 200:
                    raise RegistryError(f"MLflow server at {self.tracking_uri} answered {resp.status} on /health")
        except (urllib.error.URLError, OSError) as err:
            reason = getattr(err, "reason", err)
            raise RegistryError(f"MLflow tracking server at {self.tracking_uri} is unreachable ({reason}); start it or unset MLFLOW_TRACKING_URI") from None

    @property
    def client(self):
        if self._client is None:
            from mlflow import MlflowClient

            self.check_available()
            _set_fluent_uri(self.tracking_uri)
            self._client = MlflowClient(self.tracking_uri)
        return self._client

    def activate(self) -> None:
        """Point mlflow's fluent API (start_run, download_artifacts) at this registry's store:
        another Registry in the same process may have pointed it elsewhere."""
        self.client  # connect / health check first
        _set_fluent_uri(self.tracking_uri)

    def experiment_id(self) -> str:
        exp = self.client.get_experiment_by_name(self.experiment)
        if exp is not None:
            return exp.experiment_id
        return self.client.create_experiment(self.experiment, artifact_location=self.artifact_location)

    # --- versions ---------------------------------------------------------------------------

    def resolve(self, name: str, version: str | None = None, alias: str | None = None):
        """The ModelVersion for name + version or alias; RegistryError naming what is missing."""
        from mlflow.exceptions import MlflowException

        try:
            if alias is not None:
                return self.client.get_model_version_by_alias(name, alias)
            return self.client.get_model_version(name, str(version))
        except MlflowException:
            what = f"alias {alias!r}" if alias is not None else f"version {version}"
            raise RegistryError(f"model {name!r} has no {what} in the registry at {self.tracking_uri}") from None

    def champion(self, name: str):
        return self.resolve(name, alias=ALIAS_CHAMPION)

    def has_alias(self, name: str, alias: str) -> bool:
        try:
            self.resolve(name, alias=alias)
            return True
        except RegistryError:
            return False

    def versions(self, name: str) -> list:
        from mlflow.exceptions import MlflowException

        try:
            return sorted(self.client.search_model_versions(f"name='{name}'"), key=lambda v: int(v.version))
        except MlflowException:
            return []

    def register(self, name: str, model, spec: dict, files: dict[str, bytes], metrics: dict[str, float],
                 params: dict[str, Any], tags: dict[str, str], run_name: str, dataset: Any = None) -> VersionRef:
        """One MLflow run with the model artifacts, then a registered version pointing at them.
        If registering fails, the run is marked FAILED and no version is left behind."""
        import mlflow
        from mlflow.exceptions import MlflowException

        self.activate()
        exp_id = self.experiment_id()
        with tempfile.TemporaryDirectory() as tmp:
            d = Path(tmp) / "model"
            d.mkdir()
            (d / "weights.safetensors").write_bytes(state_bytes(model))
            (d / "spec.json").write_text(json.dumps(spec, indent=1, sort_keys=True))
            for fname, data in files.items():
                (d / fname).write_bytes(data)
            with mlflow.start_run(experiment_id=exp_id, run_name=run_name) as run:
                mlflow.log_params({k: str(v)[:500] for k, v in params.items()})
                mlflow.log_metrics({k: float(v) for k, v in metrics.items() if v is not None and v == v})
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
                self.client.create_registered_model(name, description="Models certified by the unlearning pipeline")
            mv = self.client.create_model_version(name, source=source, run_id=run_id, tags=tags)
        except MlflowException as err:
            self.client.set_terminated(run_id, status="FAILED")
            raise RegistryError(f"registering {name} failed: {err}") from None
        return VersionRef(name, str(mv.version))

    def delete_version(self, ref: VersionRef) -> None:
        self.client.delete_model_version(ref.name, ref.version)

    def set_tags(self, ref: VersionRef, tags: dict[str, str]) -> None:
        for k, v in tags.items():
            self.client.set_model_version_tag(ref.name, ref.version, k, v)

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
            return Path(mlflow.artifacts.download_artifacts(artifact_uri=mv.source, dst_path=str(dst)))
        except Exception as err:
            raise RegistryError(f"artifacts of {ref} cannot be downloaded: {err}") from None

    def load_model(self, ref: VersionRef):
        """(model, spec) of a version, rebuilt from spec + safetensors (no pickle)."""
        with tempfile.TemporaryDirectory() as tmp:
            d = self.download(ref, Path(tmp))
            try:
                spec = json.loads((d / "spec.json").read_text())
                weights = (d / "weights.safetensors").read_bytes()
            except (OSError, json.JSONDecodeError) as err:
                raise ModelError(f"{ref}: model artifacts unreadable ({err})") from None
        try:
            return load_model(spec, weights), spec
        except ModelError as err:
            raise ModelError(f"{ref}: {err}") from None

    def log_to_run(self, run_id: str, files: dict[str, bytes], folder: str = "model") -> None:
        with tempfile.TemporaryDirectory() as tmp:
            for fname, data in files.items():
                (Path(tmp) / fname).write_bytes(data)
            self.client.log_artifacts(run_id, tmp, artifact_path=folder)
