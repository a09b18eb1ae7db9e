"""`unlearn bench-merge`: bench runs of one configuration over different seeds, as one result."""

from __future__ import annotations


class MergeError(ValueError):
    """Bench results that cannot be combined into one table."""


# Config keys that may differ between the runs being merged: each run covers its own seeds,
# and may have read back a different number of finished points (benchmarks/points.py).
_PER_RUN = frozenset({"seeds", "lr_chosen", "points"})


def merge_results(results: list[tuple[str, dict]]) -> dict:
    """Combine bench runs of the same configuration over different seeds into one result (e.g.
    seeds run in parallel processes, or on two machines). Each seed's records stay together, so
    ratios to Retrain and FT remain same-run within a seed.

    results: (label, result dict) pairs; the label names a run in error messages.
    """
    if not results:
        raise MergeError("nothing to merge: give at least one results folder")
    first_label, first = results[0]
    base = {k: v for k, v in first["config"].items() if k not in _PER_RUN}
    seeds: list[int] = []
    chosen: dict = {}
    records: list[dict] = []
    seen: set[tuple[str, int]] = set()
    for label, res in results:
        cfg = res["config"]
        differs = sorted(k for k in set(base) | (set(cfg) - _PER_RUN) if cfg.get(k) != base.get(k))
        if differs:
            raise MergeError(
                f"{label} was run with another configuration than {first_label} "
                f"(differs in {', '.join(differs)}); merge only runs of one configuration"
            )
        for r in res["records"]:
            key = (r["method"], r["seed"])
            if key in seen:
                raise MergeError(
                    f"{label} repeats method {key[0]!r} for seed {key[1]}; each seed may come from "
                    "one run only"
                )
            seen.add(key)
            records.append(r)
        seeds += [s for s in cfg["seeds"] if s not in seeds]
        chosen |= cfg.get("lr_chosen", {})
    records.sort(key=lambda r: r["seed"])  # stable: each seed keeps its run's method order
    return {
        "config": {**first["config"], "seeds": sorted(seeds), "lr_chosen": chosen},
        "records": records,
        # Each run's stamps (benchmarks/provenance.py): which code computed which records.
        "provenance": [s for _, res in results for s in res.get("provenance", [])],
    }
