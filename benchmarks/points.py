"""Finished bench work kept across runs, so a stopped or killed `unlearn bench` resumes where it
stopped instead of repeating hours of work (a Fashion-MNIST table is about seven CPU hours here).

A point is one tuning grid point's measurement on the validation split, or one reported method
record. Points live in a folder named by a digest of everything every method shares: the run's
configuration (scenario, original model, the bench's scoring settings, package versions), the
hashes of the four data splits and the source of the code that trains and scores. Each point's
name adds a hash of the settings only its method reads (RFA's `rfa` and `lora` sections, a
baseline's recipe), so re-tuning RFA's settings keeps every baseline's points. A changed setting,
split or line of code therefore never reuses a stale point. Which methods and seeds a run reports
is not part of it: runs over different methods share their points. Each point is written through
a temporary name, so a killed run leaves a whole point or none.
"""

from __future__ import annotations

import ast
import json
import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from components.canonical import canonical_json, sha256_hex
from components.files import write_atomic

ROOT = Path(__file__).resolve().parents[1]
log = logging.getLogger(__name__)
# What trains, measures and selects: a change to any of it changes every number. The settings
# module is left out: the values it gives enter through the config (rfa, lora, recipes, bench,
# oracle_train), so editing one scenario's defaults keeps other tables' points.
SOURCES = ("components", "benchmarks/cache.py", "benchmarks/harness.py",
           "benchmarks/selection.py", "benchmarks/shadows.py")  # fmt: skip
_NOT_CODE = ("components/settings.py",)
# Config keys that say what a run reports or chose, not how a point is computed.
_PER_RUN = frozenset({"seeds", "methods", "lr_chosen", "grids", "tuning", "points"})
# Config sections one method reads alone: they name that method's points, not the folder.
_OWN_SECTIONS = frozenset({"rfa", "lora", "recipes"})
_OWN: dict[str, Callable[[dict, str], dict]] = {
    "rfa": lambda c, _: {"rfa": c["rfa"], "lora": c["lora"]},
}


def _recipe(config: dict, name: str) -> dict:
    return {"recipe": config["recipes"].get(name)}


def own_settings(config: dict, name: str) -> str:
    """Short hash of the settings only `name` reads (a baseline: its recipe)."""
    return sha256_hex(canonical_json(_OWN.get(name, _recipe)(config, name)))[:12]


def code_digest(root: Path = ROOT) -> str:
    """sha256 over the path and syntax tree of every Python source in SOURCES, in path order:
    comments, docstrings and formatting do not change it, code does."""
    files: list[Path] = []
    for name in SOURCES:
        p = root / name
        files += sorted(p.rglob("*.py")) if p.is_dir() else [p]
    rel = [f.relative_to(root).as_posix() for f in files]
    parts = [f"{r}\n{_code_of(f.read_text())}" for r, f in zip(rel, files, strict=True)
             if r not in _NOT_CODE]  # fmt: skip
    return sha256_hex("\n\0".join(parts).encode())


def _code_of(source: str) -> str:
    """The module's syntax tree without docstrings (comments never reach the tree)."""
    tree = ast.parse(source)
    for node in ast.walk(tree):
        body = getattr(node, "body", None)
        if isinstance(body, list) and body and _is_docstring(body[0]):
            node.body = body[1:] or [ast.Pass()]
    return ast.dump(tree, include_attributes=False)


def _is_docstring(stmt: ast.stmt) -> bool:
    return (
        isinstance(stmt, ast.Expr)
        and isinstance(getattr(stmt, "value", None), ast.Constant)
        and isinstance(stmt.value.value, str)
    )


def _plain(value: object) -> object:
    """numpy scalars (what metrics return) as Python numbers."""
    return value.item() if hasattr(value, "item") else str(value)


@dataclass(frozen=True)
class Points:
    """One configuration's finished points (a folder of JSON files, one per point)."""

    folder: Path

    @classmethod
    def for_run(cls, cache: Path, config: dict, data: dict[str, str], code: str) -> Points:
        key = {k: v for k, v in config.items() if k not in _PER_RUN | _OWN_SECTIONS}
        digest = sha256_hex(canonical_json({"config": key, "data": data, "code": code}))
        return cls(cache / "points" / digest[:16])

    def _path(self, key: str) -> Path:
        return self.folder / f"{key}.json"

    def get(self, key: str) -> dict | None:
        path = self._path(key)
        if not path.exists():
            return None
        log.info("%s: finished by an earlier run of this configuration, reused", key)
        return json.loads(path.read_text())

    def put(self, key: str, value: dict) -> None:
        self.folder.mkdir(parents=True, exist_ok=True)
        write_atomic(self._path(key), json.dumps(value, default=_plain))  # whole or absent
        log.info("%s: finished", key)  # a bench logging to a file shows no live bar (cli.py)
