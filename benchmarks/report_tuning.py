"""The tuning lines of results.md: which lr each method chose on the tuning seed, and which
choices sit at an end of their grid."""

from __future__ import annotations


def tuning_line(cfg: dict) -> str:
    """How every method's learning rate was chosen, and what it chose."""
    t, sizes = cfg["tuning"], cfg.get("splits", {})
    chosen = ", ".join(
        f"{name} = {c['lr']} (of {c['grid'][0]}-{c['grid'][-1]})"
        if c["lr"] is not None
        else f"{name}: every point diverged"
        for name, c in t["methods"].items()
    )
    return (
        f"Learning rates chosen on seed {t['seed']}'s forget set by the smallest average gap to "
        f"its Retrain on the validation split ({sizes.get('validation', '?')} images); the seeds "
        f"above were not tuned on and are scored on the report split "
        f"({sizes.get('report', '?')} images), which no choice read: {chosen}."
    )


def edge_choices(result: dict) -> list[str]:
    """'method: highest (lr)' for each choice at an end of its grid."""
    tuning = result["config"].get("tuning")
    if tuning:
        methods = tuning["methods"].items()
        return [f"{name}: {c['edge']} ({c['lr']}){_ties(c)}" for name, c in methods if c["edge"]]
    return [
        f"{r['method']}@seed{r['seed']}: {r['lr_at_grid_edge']} ({r['lr']})"
        for r in result["records"]
        if r.get("lr_at_grid_edge")
    ]


def _ties(c: dict) -> str:
    """Where the chosen point's gap equals others' (the lowest lr wins a tie), the grid end is
    not an optimum past the grid: the gap does not move with the lr there."""
    gap = c["gaps"][c["grid"].index(c["lr"])]
    ties = sum(g == gap for g in c["gaps"]) - 1
    return f", tied with {ties} other point{'s' * (ties > 1)}" if ties else ""
