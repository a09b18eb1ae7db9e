"""components/ is the pure library: no orchestration, tracking or versioning imports."""

import ast
from pathlib import Path

FORBIDDEN = {"prefect", "mlflow", "dvc"}
COMPONENTS = Path(__file__).resolve().parents[2] / "components"


def _imports(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_components_import_no_orchestration_tracking_or_versioning():
    files = sorted(COMPONENTS.rglob("*.py"))
    assert len(files) >= 20 and any(f.parent.name == "unlearning" for f in files)
    offenders = {f.name: _imports(f) & FORBIDDEN for f in files if _imports(f) & FORBIDDEN}
    assert offenders == {}


def test_components_never_import_pipelines_or_the_benchmark():
    offenders = [
        f.name for f in COMPONENTS.rglob("*.py") if {"pipelines", "benchmarks"} & _imports(f)
    ]
    assert offenders == []


def test_only_the_command_line_mounts_the_benchmark():
    """The pipeline never depends on the harness; `unlearn bench` is mounted by the CLI alone."""
    pipelines = COMPONENTS.parent / "pipelines"
    users = sorted(f.name for f in pipelines.rglob("*.py") if "benchmarks" in _imports(f))
    assert users == ["cli.py"]
