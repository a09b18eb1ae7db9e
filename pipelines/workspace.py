"""A workspace: one git + DVC repository holding a dataset's snapshots, its params.yaml and
dvc.yaml, plus the (git-ignored) MLflow store and request store. Like git and dvc, commands find
it from the current directory upwards, or from --workspace.
"""

from __future__ import annotations

import contextlib
import io
import json
import logging
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING

import yaml

from components.data import Dataset, load_dataset, write_samples
from components.settings import Settings, load_settings
from pipelines.gitlock import git_turn

if TYPE_CHECKING:
    from pipelines.registry import Registry

STATE_DIR = ".unlearn"
MARKER = f"{STATE_DIR}/workspace.json"
PROJECT_ROOT = Path(__file__).resolve().parent.parent

GITIGNORE = """\
# local state: request store, MLflow store and artifacts, Prefect home, DVC remote
/.unlearn/
/mlflow.db
/mlartifacts/
"""


class WorkspaceError(RuntimeError):
    """No workspace here, or a workspace operation (git, DVC) failed."""


def utcnow() -> str:
    return datetime.now(UTC).replace(microsecond=0).isoformat()


@dataclass(frozen=True)
class Workspace:
    root: Path

    @cached_property
    def settings(self) -> Settings:
        return load_settings(self.root / "params.yaml")

    @property
    def state(self) -> Path:
        return self.root / STATE_DIR

    def batch_dir(self, batch_id: str) -> Path:
        """A batch's scratch folder (its unlearned weights between tasks); removed when the batch
        ends or is recovered. Under the workspace, so workers that share the workspace path share
        it."""
        return self.state / "batches" / batch_id

    @property
    def data_dir(self) -> Path:
        return self.root / "data" / "raw"

    @property
    def requests_db(self) -> str | Path:
        """The request store: the database URL given at init (`--request-store`, shared by every
        clone and worker of this model), else the sqlite file in the workspace's state."""
        shared = self.meta.get("request_store") if (self.root / MARKER).is_file() else None
        return shared or self.state / "requests.db"

    @property
    def prefect_home(self) -> Path:
        return self.state / "prefect"

    @property
    def meta(self) -> dict:
        return json.loads((self.root / MARKER).read_text())

    @property
    def tracking_uri(self) -> str:
        """MLFLOW_TRACKING_URI when set (a shared server), else a sqlite file in the workspace."""
        return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{self.root / 'mlflow.db'}"

    @property
    def artifact_location(self) -> str | None:
        """Local artifact root for the sqlite store; a tracking server chooses its own."""
        return (
            None if os.environ.get("MLFLOW_TRACKING_URI") else (self.root / "mlartifacts").as_uri()
        )

    def check_writable(self) -> None:
        """WorkspaceError unless a file can be created in the workspace's state folder."""
        try:
            tempfile.TemporaryFile(dir=self.root / STATE_DIR).close()
        except OSError as err:
            raise WorkspaceError(
                f"workspace {self.root} is not writable ({err.strerror}); run this command on a "
                "writable copy (reading commands such as `audit verify` work read-only)"
            ) from None

    def registry(self) -> Registry:
        """The MLflow registry this workspace records its versions in."""
        from pipelines.registry import Registry  # imports torch: not for commands without models

        return Registry(
            self.tracking_uri, self.settings.registry.experiment, self.artifact_location
        )

    def push_history(self) -> None:
        """Push the workspace's history to its git remote `origin` (`init --git-remote`), so the
        audit trail does not live on one disk. A failed push loses nothing (the commit is local
        and the next push carries it): it is a warning naming the fix, not an error."""
        if "origin" not in self.git("remote", check=False).split():
            return
        proc = subprocess.run(["git", "push", "-q", "origin", "HEAD:main"], cwd=self.root,
                              capture_output=True, text=True)  # fmt: skip
        if proc.returncode != 0:
            why = (proc.stderr.strip().splitlines() or ["git push failed"])[-1]
            logging.getLogger("unlearn").warning(
                "workspace history not pushed to origin (%s); run `git push origin HEAD:main` "
                "in %s",
                why,
                self.root,
            )

    def git(self, *args: str, check: bool = True) -> str:
        with git_turn(self.root):  # one pipeline git at a time; a killed git's lock is cleared
            proc = subprocess.run(["git", *args], cwd=self.root, capture_output=True, text=True)
        if check and proc.returncode != 0:
            why = proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else proc.returncode
            raise WorkspaceError(f"git {' '.join(args)} failed: {why}")
        return proc.stdout.strip()


@contextlib.contextmanager
def quiet_dvc() -> Iterator[None]:
    """DVC's API prints "now commit / enable autostage" hints (logger and stdout); the pipeline
    commits itself, so they are noise here. Warnings and errors still show."""
    logging.disable(logging.INFO)
    try:
        with contextlib.redirect_stdout(io.StringIO()):
            yield
    finally:
        logging.disable(logging.NOTSET)


def find_workspace(start: str | Path | None = None) -> Workspace:
    """The workspace containing `start` (default: the current directory)."""
    here = Path(start or Path.cwd()).resolve()
    for d in (here, *here.parents):
        if (d / MARKER).is_file():
            return Workspace(d)
    hint = f"{start} is not" if start else "the current directory is not"
    raise WorkspaceError(
        f"{hint} inside an unlearn workspace; run `unlearn init DIR` or pass --workspace DIR"
    )


def _project_file(name: str) -> str | None:
    p = PROJECT_ROOT / name
    return p.read_text() if p.is_file() else None


def _synthetic_subjects(ds: Dataset, per_subject: int, seed: int) -> dict[str, list[str]]:
    """Demo mapping subject -> sample ids: each training sample belongs to one synthetic subject."""
    import numpy as np

    ids = np.random.default_rng(seed).permutation(ds.train.ids)
    return {
        f"subject-{i // per_subject:04d}": sorted(ids[i : i + per_subject].tolist())
        for i in range(0, len(ids), per_subject)
    }


def _write_data(ws: Workspace, ds: Dataset, seed: int) -> None:
    """The raw snapshot's files: one file per sample, the split summary, subjects, tombstones."""
    for name, split in (("train", ds.train), ("heldout", ds.heldout), ("test", ds.test)):
        write_samples(ws.data_dir, name, split)
    counts = {"train": len(ds.train), "heldout": len(ds.heldout), "test": len(ds.test)}
    splits = {"dataset": ds.name, "origins": dict(ds.origins),
              "class_names": list(ds.class_names), "counts": counts}  # fmt: skip
    data = ws.root / "data"
    (data / "splits.json").write_text(json.dumps(splits, indent=1))
    (data / "subjects.json").write_text(json.dumps(_synthetic_subjects(ds, 4, seed), indent=1))
    tombstones = {"erased": {}, "forgotten_classes": {}}
    (data / "tombstones.json").write_text(json.dumps(tombstones, indent=1))


# URL schemes DVC serves through a plugin package (`pip install 'dvc[s3]'` etc.).
DVC_PLUGINS = {"s3": "dvc_s3", "gs": "dvc_gs", "azure": "dvc_azure", "ssh": "dvc_ssh",
               "hdfs": "dvc_hdfs", "webdav": "dvc_webdav", "webdavs": "dvc_webdav",
               "oss": "dvc_oss", "gdrive": "dvc_gdrive"}  # fmt: skip


def remote_url(remote: str | Path | None, default: Path) -> str:
    """The DVC remote as DVC takes it: a URL as given (s3://, gs://, azure://, ssh://, ...), a
    local folder resolved to an absolute path. A URL whose DVC plugin is missing is refused now,
    not after the snapshot is built."""
    import importlib.util
    import re

    text = str(remote) if remote is not None else str(default)
    m = re.match(r"^([a-z][a-z0-9+.-]*)://", text)
    if m is None:
        return str(Path(text).resolve())
    scheme = m.group(1)
    plugin = DVC_PLUGINS.get(scheme)
    if plugin is not None and importlib.util.find_spec(plugin) is None:
        extra = "webdav" if scheme == "webdavs" else scheme
        raise WorkspaceError(
            f"DVC remote {text} needs `pip install 'dvc[{extra}]'` (not installed)"
        )
    if plugin is None and scheme not in ("http", "https", "file"):
        raise WorkspaceError(f"DVC remote {text}: unknown URL scheme {scheme!r}")
    return text


def _init_repos(
    ws: Workspace, ds: Dataset, remote: str | Path | None, git_remote: str | None = None
) -> None:
    """git + DVC with the remote configured; the raw snapshot added, committed and pushed."""
    from dvc.repo import Repo

    root = ws.root
    ws.git("init", "-q", "-b", "main")
    ws.git("config", "user.name", "unlearn-pipeline")
    ws.git("config", "user.email", "unlearn-pipeline@localhost")
    ws.git("config", "commit.gpgsign", "false")
    with quiet_dvc():
        repo = Repo.init(str(root))
    with repo.config.edit() as conf:
        conf["core"]["analytics"] = "false"
        conf["core"]["autostage"] = "true"
        conf["core"]["remote"] = "local"
        conf["remote"]["local"] = {"url": remote_url(remote, root / STATE_DIR / "dvc-remote")}
    with git_turn(root), quiet_dvc():  # DVC writes git's index too (snapshot.add_snapshot)
        repo.add(str(ws.data_dir))
    ws.git("add", "-A")
    sizes = f"{len(ds.train)} train / {len(ds.heldout)} heldout / {len(ds.test)} test"
    ws.git("commit", "-q", "-m", f"init: raw {ds.name} snapshot ({sizes})")
    repo.push()
    repo.close()
    if git_remote is not None:  # pushed now: an unreachable remote fails init, not a batch
        ws.git("remote", "add", "origin", git_remote)
        ws.git("push", "-q", "origin", "HEAD:main")


def init_workspace(
    directory: str | Path,
    params_path: str | Path | None = None,
    remote: str | Path | None = None,
    request_store: str | None = None,
    git_remote: str | None = None,
) -> Workspace:
    """Create a workspace: git repo, DVC with a local remote, the raw data snapshot (dvc add,
    commit, push), the request store (an sqlite file inside, or the PostgreSQL database at
    `request_store`), the git remote `origin` every commit is pushed to (`git_remote`). Validates
    params and data before writing anything."""
    root = Path(directory).resolve()
    if (root / MARKER).exists():
        raise WorkspaceError(f"{root} is already an unlearn workspace")
    if root.exists() and any(root.iterdir()):
        raise WorkspaceError(f"{root} exists and is not empty; choose a new directory")
    try:
        params_text = Path(params_path).read_text() if params_path else _project_file("params.yaml")
    except OSError as err:
        raise WorkspaceError(f"cannot read params file {params_path}: {err.strerror}") from None
    except UnicodeDecodeError:
        raise WorkspaceError(f"params file {params_path}: not a text file (not UTF-8)") from None
    if params_text is None:
        params_text = yaml.safe_dump(Settings().model_dump(mode="json"), sort_keys=False)
    # Validate before touching the disk: a bad params file must leave nothing behind.
    from components.settings import parse_settings

    settings = parse_settings(yaml.safe_load(params_text), source=str(params_path or "params.yaml"))
    remote = remote_url(remote, root / STATE_DIR / "dvc-remote")  # a bad URL: nothing written
    if request_store is not None:
        from pipelines.store_engine import store_location

        try:
            store_location(request_store)
        except Exception as err:  # SQLAlchemy's URL parser raises several kinds
            raise WorkspaceError(f"--request-store {request_store}: {err}") from None
    ds = load_dataset(settings.data)

    created = not root.exists()
    try:
        (root / STATE_DIR).mkdir(parents=True, exist_ok=True)
        ws = Workspace(root)
        (root / "params.yaml").write_text(params_text)
        (root / "dvc.yaml").write_text(_project_file("dvc.yaml") or "stages: {}\n")
        (root / ".gitignore").write_text(GITIGNORE)
        _write_data(ws, ds, settings.data.seed)
        _init_repos(ws, ds, remote, git_remote)
        marker = {"created_at": utcnow(), "dataset": ds.name}
        if request_store is not None:
            marker["request_store"] = request_store
        (root / MARKER).write_text(json.dumps(marker, indent=1))
        from pipelines.store import RequestStore

        RequestStore(ws.requests_db).close()
        return ws
    except Exception:
        # Leave no half-made workspace behind.
        if created:
            shutil.rmtree(root, ignore_errors=True)
        else:
            for child in root.iterdir():
                shutil.rmtree(child, ignore_errors=True) if child.is_dir() else child.unlink()
        raise
