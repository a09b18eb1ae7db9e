"""`unlearn bench-merge`: bench runs of one configuration, over different seeds or different
methods, as one table."""

from __future__ import annotations

from benchmarks.report_timing import sections


class MergeError(ValueError):
    """Bench results that cannot be combined into one table."""


# Config keys that may differ between the runs being merged: each run covers its own seeds and
# methods (a method's tuning, grid and recipe come from the run that ran it), and may have read
# back a different number of finished points (benchmarks/points.py).
_PER_RUN = frozenset({"seeds", "methods", "lr_chosen", "tuning", "grids", "recipes", "points"})
_PER_METHOD = ("grids", "recipes", "lr_chosen")
# Sections RFA alone reads (benchmarks/points._OWN_SECTIONS): they follow the run that ran RFA,
# like a baseline's recipe. What every method reads from `rfa` (its device and precision) is
# compared through the config's own `device` and `precision`.
_RFA_OWN = frozenset({"rfa", "lora"})
# Rows every run of a seed has: the untouched original and its Retrain oracle. Runs over other
# methods each carry them; they must agree, or the runs' oracles (or scoring) were not the same.
_SHARED = frozenset({"original", "retrain"})
# A record's machine-dependent fields: a cached oracle's record is the same oracle, read back.
_TIMING = frozenset({"seconds", "cpu_seconds", "oracle_cached", "load_1m"})


def merge_results(results: list[tuple[str, dict]]) -> dict:
    """Combine bench runs of the same configuration into one result: seeds run in parallel
    processes or on two machines, or methods run in separate processes (each with the seeds'
    Retrain). Each seed's records stay together, so ratios to Retrain and FT remain same-seed.

    A seed's original and Retrain rows may come from several runs only with the same numbers
    (every metric, timing aside): the same oracle, scored by the same code. Another method may
    come from one run per seed, with one grid, recipe and choice across the runs that ran it.

    results: (label, result dict) pairs; the label names a run in error messages.
    """
    if not results:
        raise MergeError("nothing to merge: give at least one results folder")
    first_label, first = results[0]
    base = {k: v for k, v in first["config"].items() if k not in _PER_RUN | _RFA_OWN}
    seeds: list[int] = []
    methods: list[str] = []
    # Grids and recipes list every method, run or not: the first run's, with each method's entry
    # from the run that ran it. Choices and tuning list only the methods run.
    own: dict[str, dict] = {k: dict(first["config"].get(k) or {}) for k in ("grids", "recipes")}
    own |= {"lr_chosen": {}, "tuning": {}}
    claimed: set[tuple[str, str]] = set()
    rfa_own: dict | None = None  # the rfa and lora sections of the run that ran RFA
    records: list[dict] = []
    seen: dict[tuple[str, int], dict] = {}
    for label, res in results:
        cfg = res["config"]
        shared = (set(base) | set(cfg)) - _PER_RUN - _RFA_OWN
        differs = sorted(k for k in shared if cfg.get(k) != base.get(k))
        if differs:
            raise MergeError(
                f"{label} was run with another configuration than {first_label} "
                f"(differs in {', '.join(differs)}); merge only runs of one configuration"
            )
        _take_methods(label, cfg, own, claimed)
        rfa_own = _take_rfa_sections(label, cfg, rfa_own)
        records += _new_records(label, res["records"], seen)
        seeds += [s for s in cfg["seeds"] if s not in seeds]
        methods += [m for m in cfg.get("methods", []) if m not in methods]
    records.sort(key=lambda r: r["seed"])  # stable: each seed keeps its runs' method order
    config = {**first["config"], "seeds": sorted(seeds), "methods": methods,
              **{k: own[k] for k in _PER_METHOD if k in first["config"]},
              **(rfa_own or {})}  # fmt: skip
    if "tuning" in first["config"]:
        config["tuning"] = {**first["config"]["tuning"], "methods": own["tuning"]}
    return {
        "config": config,
        "records": records,
        **_timing(results, config),
        # Each run's stamps (benchmarks/provenance.py): which code computed which records.
        "provenance": [s for _, res in results for s in res.get("provenance", [])],
    }


def _timing(results: list[tuple[str, dict]], config: dict) -> dict:
    """The one run's `bench-time` sections (one per seed timed), if one has them: a merged table
    joined with new methods keeps its methods' one-process timings (each names the methods it
    timed; the others are untimed, not dropped). Two timed runs timed other processes: time the
    merged table again instead. A timed method must have run at the merged table's choice."""
    timed = [(label, sections(res)) for label, res in results if sections(res)]
    if len(timed) > 1:
        raise MergeError(
            f"{timed[0][0]} and {timed[1][0]} were each timed (bench-time): merge them untimed "
            "and run `unlearn bench-time` on the merged table"
        )
    if not timed:
        return {}
    label, timings = timed[0]
    for run in (run for t in timings for run in t["runs"]):
        m = run["method"]
        if m != "retrain" and (
            m not in config["methods"] or config["lr_chosen"].get(m) != run["lr"]
        ):
            raise MergeError(f"{label} timed {m} at lr {run['lr']}, not the merged table's choice")
    return {"timings": timings}


def _take_methods(label: str, cfg: dict, own: dict[str, dict], claimed: set) -> None:
    """Each of the run's methods' grid, recipe, choice and tuning, into `own`; a method two runs
    ran must agree in all four."""
    tuned = (cfg.get("tuning") or {}).get("methods", {})
    for m in cfg.get("methods", []):
        for key, values in (*((k, cfg.get(k) or {}) for k in _PER_METHOD), ("tuning", tuned)):
            if m not in values:
                continue
            if (key, m) in claimed and own[key][m] != values[m]:
                raise MergeError(f"{label} ran {m} with another {key} entry than an earlier run")
            own[key][m] = values[m]
            claimed.add((key, m))


def _take_rfa_sections(label: str, cfg: dict, taken: dict | None) -> dict | None:
    """The run's rfa and lora sections if it ran RFA (two runs of RFA must agree), else `taken`."""
    if "rfa" not in cfg.get("methods", []):
        return taken
    mine = {k: cfg.get(k) for k in _RFA_OWN}
    if taken is not None and taken != mine:
        raise MergeError(f"{label} ran rfa with other rfa or lora settings than an earlier run")
    return mine


def _new_records(label: str, records: list[dict], seen: dict[tuple[str, int], dict]) -> list:
    """The run's records that no earlier run gave; a repeated original or Retrain row must be
    the earlier one's."""
    new = []
    for r in records:
        key = (r["method"], r["seed"])
        if key not in seen:
            seen[key] = r
            new.append(r)
        elif r["method"] not in _SHARED:
            raise MergeError(
                f"{label} repeats method {key[0]!r} for seed {key[1]}; each seed may come from "
                "one run only"
            )
        elif _metrics(r) != _metrics(seen[key]):
            raise MergeError(
                f"{label}'s {key[0]} row for seed {key[1]} differs from an earlier run's: "
                "another oracle or other scoring code; merge only runs that share them"
            )
    return new


def _metrics(record: dict) -> dict:
    return {k: v for k, v in record.items() if k not in _TIMING}
