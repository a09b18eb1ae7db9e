"""results.md's section for a table timed by `unlearn bench-time` (benchmarks/timing.py)."""

from __future__ import annotations

# method.md's time targets: RFA's wall seconds at most this share of each reference method's.
TIME_LIMITS = {"retrain": 0.05, "ft": 0.5}


def timing_lines(result: dict) -> list[str]:
    """results.md's section for `result["timing"]` (none if the table was not timed)."""
    t = result.get("timing")
    if not t:
        return []
    by = {r["method"]: r for r in t["runs"]}
    lines = [
        "",
        f"## Time in one process (seed {t['seed']}, `unlearn bench-time`)",
        "",
        "Retrain trained for this (not the cached oracle"
        + _retrain_precision(t, result)
        + "), then every method at its chosen lr, one after another in one process. "
        + _sampling(t)
        + (
            f"The 1-minute load stayed at most {t['load_limit']:.1f} throughout: quiet."
            if t["quiet"]
            else f"**Not quiet** (load above {t['load_limit']:.1f} during a run): ratios shown, "
            "targets not judged."
        ),
        "",
        "| method | seconds | CPU seconds | / Retrain | / FT | load before, after |",
        "|---|---|---|---|---|---|",
    ]
    for r in t["runs"]:
        ratio = [_ratio(r, by.get(ref)) for ref in ("retrain", "ft")]
        load = ", ".join(f"{x:.1f}" for x in r["load_1m"])
        lines.append(f"| {r['method']} | {r['seconds']:.1f} | {r['cpu_seconds']:.1f} | "
                     f"{ratio[0]} | {ratio[1]} | {load} |")  # fmt: skip
    if "rfa" in by and "retrain" in by:
        share = by["rfa"]["seconds"] / by["retrain"]["seconds"]
        limit = TIME_LIMITS["retrain"]
        verdict = ("met" if share <= limit else "MISSED") if t["quiet"] else "not judged"
        lines += ["", f"RFA's time ≤ {100 * limit:.0f} % of Retrain's: {100 * share:.1f} % — "
                  f"{verdict}."]  # fmt: skip
    return lines


def _retrain_precision(t: dict, result: dict) -> str:
    """Where the timed Retrain's precision is not the table's oracles': which it was."""
    timed = t.get("retrain_precision")  # absent in timings made before the option
    cfg = result.get("config", {})
    oracles = cfg.get("oracle_train", {}).get("precision")
    if timed is None or timed == oracles:
        return ""
    return (f"; in {timed}, where the table's oracles trained in {oracles} and its methods ran "
            f"in {cfg.get('precision')}")  # fmt: skip


def _sampling(t: dict) -> str:
    """How the seconds were had: whole runs, or projected from each run's first part."""
    if not t.get("sample_seconds"):
        return ""
    seen = [r for r in t["runs"] if r.get("sampled")]
    share = ", ".join(
        f"{r['method']} {r['sampled']['sampled_steps']} of {r['steps']}" for r in seen
    )
    return (
        f"Each run was stopped about {t['sample_seconds']:g} s in and its seconds projected: its "
        "seconds per step (per kind of step) times its steps, plus its set-up "
        f"(benchmarks/sampling.py; steps timed: {share or 'none, every run ended sooner'}; "
        "the others ran whole). "
    )


def _ratio(r: dict, ref: dict | None) -> str:
    return f"{100 * r['seconds'] / ref['seconds']:.1f} %" if ref else "–"
