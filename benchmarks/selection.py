"""Choosing every method's hyper-parameter the same way: one grid per method (`bench.grids`, five
or more log-spaced learning rates; RFA's included), run on the tuning seed's forget set and scored
on the validation split against that seed's Retrain; the point closest to it is kept for every
reported seed. Nothing here reads the report split or the reference split.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace

from benchmarks.report import avg_gap
from components.grids import grid_edge
from components.settings import Settings
from components.unlearning.types import MethodConfig

# (method config, settings, scenario, grid point or None) -> the config that runs that point
Apply = Callable[[MethodConfig, Settings, str, "float | None"], MethodConfig]


def _rfa_point(cfg: MethodConfig, s: Settings, scenario: str, lr: float | None) -> MethodConfig:
    """RFA with its scenario's lr set to the grid point, everything else as in the params file."""
    if lr is None:
        return cfg
    key = f"{scenario}_unlearning"
    sc = getattr(cfg.rfa, key).model_copy(update={"lr": lr})
    return replace(cfg, rfa=cfg.rfa.model_copy(update={key: sc}))


def _baseline_point(name: str) -> Apply:
    """A baseline at its own recipe (`bench.recipes`) with the grid point's lr."""

    def apply(cfg: MethodConfig, s: Settings, scenario: str, lr: float | None) -> MethodConfig:
        recipe = {**s.bench.recipes.get(name, {}), **({"lr": lr} if lr is not None else {})}
        return replace(cfg, baseline=cfg.baseline.model_copy(update=recipe))

    return apply


POINTS: dict[str, Apply] = {"rfa": _rfa_point}


def with_point(
    name: str, cfg: MethodConfig, s: Settings, scenario: str, lr: float | None
) -> MethodConfig:
    """`cfg` for method `name` at grid point `lr` (None: no grid; a baseline's recipe holds)."""
    return POINTS.get(name, _baseline_point(name))(cfg, s, scenario, lr)


def choose(grid: list[float], score: Callable[[float], dict | None], oracle: dict | None) -> dict:
    """Every point of a method's grid on the tuning task, each scored by its average gap to the
    tuning seed's Retrain on the validation split (0 without an oracle: the first point wins).
    `score(lr)` runs that point and measures it (None: it diverged). Returns the grid, each
    point's gap (None: diverged), the chosen lr and whether it sits at an end of the grid."""
    gaps: list[float | None] = []
    for lr in grid:
        m = score(lr)
        gaps.append(None if m is None else round(avg_gap(m, oracle), 4) if oracle else 0.0)
    scored = [(g, i) for i, g in enumerate(gaps) if g is not None]
    if not scored:
        return {"grid": list(grid), "gaps": gaps, "lr": None, "edge": None}
    _, best = min(scored)
    return {"grid": list(grid), "gaps": gaps, "lr": grid[best], "edge": grid_edge(best, len(grid))}
