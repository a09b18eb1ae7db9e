"""Code and package versions recorded with every model version and certificate."""

from __future__ import annotations

import subprocess
from importlib import metadata
from pathlib import Path

PACKAGES = (
    "certified-unlearning",
    "torch",
    "peft",
    "mlflow",
    "prefect",
    "dvc",
    "scikit-learn",
    "numpy",
    "pydantic",
)
PROJECT_ROOT = Path(__file__).resolve().parent.parent


def package_versions() -> dict[str, str]:
    out = {}
    for p in PACKAGES:
        try:
            out[p] = metadata.version(p)
        except metadata.PackageNotFoundError:
            out[p] = "not installed"
    return out


def git_output(root: Path, *args: str) -> str | None:
    """`git -C root ARGS`'s stdout, stripped; None outside a work tree or without git."""
    try:
        proc = subprocess.run(
            ["git", "-C", str(root), *args], capture_output=True, text=True, timeout=10
        )
    except (OSError, subprocess.TimeoutExpired):
        return None
    return proc.stdout.strip() if proc.returncode == 0 else None


def code_version() -> str:
    """The project's git commit ('+dirty' with uncommitted changes), else the package version."""
    rev = git_output(PROJECT_ROOT, "rev-parse", "HEAD")
    if not rev:
        return f"certified-unlearning {package_versions()['certified-unlearning']}"
    dirty = git_output(
        PROJECT_ROOT,
        "status",
        "--porcelain",
        "--untracked-files=no",
        "--",
        "components",
        "pipelines",
    )
    return rev + ("+dirty" if dirty else "")
