"""The benchmark's hyper-parameter grids: what makes one acceptable, and where a choice sits."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from pydantic import ValidationError

MIN_POINTS = 5
# Methods whose grid point is set in their own settings section, not through a baseline recipe.
OWN_SECTION = frozenset({"rfa"})


def log_spaced(grid: tuple[float, ...], min_points: int = MIN_POINTS) -> bool:
    """At least `min_points` increasing values, each the same multiple of the one before."""
    ratios = [b / a for a, b in zip(grid, grid[1:], strict=False)]
    return (
        len(grid) >= min_points and all(r > 1 for r in ratios) and max(ratios) / min(ratios) < 1.01
    )


def grid_problem(
    grids: Mapping[str, tuple[float, ...]],
    recipes: Mapping[str, Mapping],
    validate: Callable[[Mapping], object],
) -> str | None:
    """What is wrong with `bench.grids` / `bench.recipes`, in one line (None: nothing).
    `validate` raises pydantic's ValidationError for a recipe the baselines cannot take."""
    missing = sorted(set(grids) - set(recipes) - OWN_SECTION)
    if missing:
        return f"bench.recipes has no entry for {', '.join(missing)}"
    for name, recipe in recipes.items():
        try:
            validate(recipe)
        except ValidationError as err:
            e = err.errors()[0]
            return f"bench.recipes.{name}.{'.'.join(str(p) for p in e['loc'])}: {e['msg']}"
    for name, grid in grids.items():
        if not log_spaced(grid):
            return (
                f"bench.grids.{name} {list(grid)}: needs at least {MIN_POINTS} increasing, "
                "log-spaced learning rates (each the same multiple of the one before)"
            )
    return None


def grid_edge(index: int, size: int) -> str | None:
    """Where a chosen grid point sits when the grid does not bracket it: "lowest" / "highest"."""
    if size < 2:
        return None
    return "lowest" if index == 0 else "highest" if index == size - 1 else None
