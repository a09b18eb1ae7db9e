"""results.md's section for a table timed by `unlearn bench-time` (benchmarks/timing.py)."""

from __future__ import annotations

import statistics

# method.md's time targets: RFA's wall seconds at most this share of each reference method's.
TIME_LIMITS = {"retrain": 0.05, "ft": 0.5}


def sections(result: dict) -> list[dict]:
    """The table's `bench-time` sections, one per seed timed (each in its own process): `timings`,
    or the one `timing` that tables written before 8e9fa4d hold where one seed was timed."""
    return result.get("timings") or ([result["timing"]] if result.get("timing") else [])


def with_section(result: dict, section: dict) -> dict:
    """`result` with `section` in place of an earlier timing of its seed, or beside the others'."""
    kept = [t for t in sections(result) if t["seed"] != section["seed"]]
    timed = sorted([*kept, section], key=lambda t: t["seed"])
    out = {k: v for k, v in result.items() if k not in ("timing", "timings")}
    return {**out, "timings": timed}


def timing_lines(result: dict) -> list[str]:
    """results.md's section per seed timed (none if the table was not timed), and where several
    seeds were, RFA's time target across them."""
    timed = sections(result)
    lines = [line for t in timed for line in _section(t, result)]
    return lines + (_across(timed) if len(timed) > 1 else [])


def rfa_share(t: dict) -> float | None:
    """RFA's seconds over Retrain's in one timing, if both were timed."""
    return share(t, "rfa", "retrain")


def share(t: dict, method: str, ref: str) -> float | None:
    """`method`'s seconds over `ref`'s in one timing (None if either is missing): with
    `--repeats`, the median over the rounds both ran of the ratio within each round. Runs of one
    round are minutes apart, and the machine's speed moved by up to 2x between rounds of one
    process (notes/fashion_mnist-class0.md), so a ratio of two medians can pair a fast round's
    run with a slow round's; a method run once is compared with the first round, where it ran."""
    by = {r["method"]: r for r in t["runs"]}
    if method not in by or ref not in by:
        return None
    pairs = zip(_rounds(by[method]), _rounds(by[ref]), strict=False)
    return statistics.median(a / b for a, b in pairs)


def _rounds(r: dict) -> list[float]:
    """A run's seconds in each round it ran, in round order (one if it ran once)."""
    return r.get("repeats") or [r["seconds"]]


def _across(timed: list[dict]) -> list[str]:
    """One line judging RFA's time target over every seed timed."""
    verdict = rfa_time_verdict(timed)
    if verdict is None:
        return []
    ok, each, missed = verdict
    said = {True: "met on every seed", None: "not judged (a process was not quiet)"}
    text = said[ok] if ok is not False else f"MISSED on seed {', '.join(map(str, missed))}"
    limit = TIME_LIMITS["retrain"]
    return ["", f"RFA's time ≤ {100 * limit:.0f} % of Retrain's, each seed timed in its own "
            f"process: {each} — {text}."]  # fmt: skip


def rfa_time_verdict(timed: list[dict]) -> tuple[bool | None, str, list[int]] | None:
    """RFA's time target over every seed timed: (met?, each seed's share as "2.3 % (seed 1),
    ...", the seeds that missed it). Missed where a quiet process missed it (load only slows a
    run, so it cannot excuse one), met only if every process stayed quiet and met it, else None
    (not judged). None in place of the triple where a timing lacks RFA or Retrain."""
    shares = [(t["seed"], rfa_share(t)) for t in timed]
    if not shares or any(share is None for _, share in shares):
        return None
    limit = TIME_LIMITS["retrain"]
    each = ", ".join(f"{100 * share:.1f} % (seed {seed})" for seed, share in shares)
    quiet = [t["quiet"] for t in timed]
    missed = [seed for (seed, share), q in zip(shares, quiet, strict=True) if q and share > limit]
    if missed:
        return False, each, missed
    return (True if all(quiet) else None), each, missed


def _section(t: dict, result: dict) -> list[str]:
    """One seed's timing: how it was had, its table, and RFA's time target on it."""
    lines = [
        "",
        f"## Time in one process (seed {t['seed']}, `unlearn bench-time`)",
        "",
        "Retrain trained for this (not the cached oracle"
        + _retrain_precision(t, result)
        + "), then every method at its chosen lr, one after another in one process. "
        + _sampling(t)
        + _repeated(t)
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
        ratio = [_ratio(t, r["method"], ref) for ref in ("retrain", "ft")]
        load = ", ".join(f"{x:.1f}" for x in r["load_1m"])
        lines.append(f"| {r['method']} | {_seconds(r)} | {r['cpu_seconds']:.1f} | "
                     f"{ratio[0]} | {ratio[1]} | {load} |")  # fmt: skip
    share = rfa_share(t)
    if share is not None:
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


def _repeated(t: dict) -> str:
    """How often the compared methods ran, where more than once (`bench-time --repeats`)."""
    if t.get("repeats", 1) == 1:
        return ""
    names = ", ".join(r["method"] for r in t["runs"] if r.get("repeats"))
    return (
        f"{names} ran {t['repeats']} times each, in rounds after the first over every method; "
        "each row is its run with the median seconds (the range of all its runs in brackets), "
        "and each ratio is the median over the rounds both methods ran of their ratio within "
        "the round (a method run once: its round's). "
    )


def _seconds(r: dict) -> str:
    """A run's seconds, with the range over its repeats where it ran more than once."""
    runs = r.get("repeats")
    spread = f" ({min(runs):.1f}–{max(runs):.1f})" if runs else ""
    return f"{r['seconds']:.1f}{spread}"


def _ratio(t: dict, method: str, ref: str) -> str:
    x = share(t, method, ref)
    return "–" if x is None else f"{100 * x:.1f} %"
