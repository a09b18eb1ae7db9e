"""components/ is the pure library: no orchestration, tracking or versioning imports."""

import ast
from pathlib import Path

FORBIDDEN = {"prefect", "mlflow", "dvc"}
COMPONENTS = Path(__file__).resolve().parent.parent / "components"


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
    files = sorted(COMPONENTS.glob("*.py"))
    assert len(files) >= 10
    offenders = {f.name: _imports(f) & FORBIDDEN for f in files if _imports(f) & FORBIDDEN}
    assert offenders == {}


def test_components_never_import_pipelines():
    offenders = [f.name for f in COMPONENTS.glob("*.py") if "pipelines" in _imports(f)]
    assert offenders == []
