"""Size limits the house style sets (docs: modules split before 400 lines, functions that read on
one screen): checked here so a growing module or function fails the build, not a review."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = ("components", "pipelines", "benchmarks", "tests", "examples")
MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 80


def _sources() -> list[Path]:
    return sorted(p for pkg in PACKAGES for p in (ROOT / pkg).rglob("*.py"))


def long_functions(source: str, limit: int) -> list[tuple[str, int]]:
    """(name, lines) of every function or method longer than `limit` lines, decorators excluded."""
    out = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            n = node.end_lineno - node.lineno + 1
            if n > limit:
                out.append((node.name, n))
    return out


def test_the_function_measure_counts_a_long_function():
    body = "\n".join(f"    x{i} = {i}" for i in range(90))
    assert long_functions(f"def f():\n{body}\n", 80) == [("f", 91)]
    assert long_functions("def g():\n    pass\n", 80) == []


def test_no_module_over_400_lines():
    sizes = {str(p.relative_to(ROOT)): len(p.read_text().splitlines()) for p in _sources()}
    assert len(sizes) > 50
    assert {p: n for p, n in sizes.items() if n > MAX_MODULE_LINES} == {}


def test_no_function_over_80_lines():
    found = {
        str(p.relative_to(ROOT)): long_functions(p.read_text(), MAX_FUNCTION_LINES)
        for p in _sources()
    }
    assert {p: f for p, f in found.items() if f} == {}


def test_the_dockerfile_builds_every_package_the_project_declares():
    """No Docker here: check the file instead. The dependency layer creates every declared
    package (setuptools refuses a missing one) and the source layer copies each top-level one."""
    import tomllib

    packages = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"][
        "packages"
    ]
    docker = (ROOT / "Dockerfile").read_text()
    for pkg in packages:
        assert f"{pkg.replace('.', '/')}/__init__.py" in docker, pkg
        top = pkg.split(".")[0]
        assert f"COPY {top} {top}" in docker, top


def test_test_files_have_unique_basenames():
    """pytest imports test modules by basename (no packages): two tiers' test_x.py collide."""
    names = [p.name for p in (ROOT / "tests").rglob("test_*.py")]
    assert sorted(n for n in set(names) if names.count(n) > 1) == []
