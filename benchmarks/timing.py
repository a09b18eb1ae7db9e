"""`unlearn bench-time`: a finished table's methods timed again in one process, on one seed.

A table's own records time each method where the table ran it: over hours, next to whatever else
the machine was doing, and its Retrain seconds come from the oracle cache (another process, often
another day). Here Retrain is trained for the purpose (never read from the cache) and every other
method runs at the lr the table chose, one after another in this process, with the 1-minute load
average read before and after each run. The section it adds to results.md judges the time
targets only if every run stayed quiet (load at most the table's threads + 0.5, as
`report.loaded_runs`); otherwise it shows the ratios and says why they are not judged. With
`--sample-seconds` each run is stopped that far in and its whole time projected from its seconds
per step (benchmarks/sampling.py; checked against whole runs in notes/sampled-timing.md).
With `--repeats N` the methods a time target compares (RFA, Retrain, FT) run N times, in rounds
after the first one over every method, so drift over the process touches each alike; each keeps
the run with the median seconds, and ratios pair runs of one round (`report_timing.share`). A
sub-minute Retrain's seconds moved by 22 % between two processes on one machine, and by up to 2x
between rounds of one (notes/fashion_mnist-class0.md): one run cannot judge a 5 % line.
"""

from __future__ import annotations

import os
import statistics
import time
from dataclasses import replace
from pathlib import Path

import torch
from rich.console import Console

from benchmarks.bench_run import BenchRun
from benchmarks.harness import Bench, SeedBench, run_timed, seed_bench, setup_bench
from benchmarks.report import load_limit
from benchmarks.report_timing import TIME_LIMITS
from benchmarks.sampling import LAYOUTS, LayoutError, Sampled, Sampler
from benchmarks.selection import with_point
from components.settings import Settings
from components.unlearning.registry import get_method
from components.unlearning.types import MethodConfig, UnlearnTask

# Settings the table recorded that the params file must reproduce: the methods timed here must
# be the methods the table measured.
_SAME = ("rfa", "lora", "recipes", "oracle_train", "original_digest")


class TimingError(ValueError):
    """The table cannot be timed as given (another model, other settings)."""


def bench_run_of(
    config: dict, data_dir: Path | None, checkpoint: Path | None, seed: int
) -> BenchRun:
    """The table's own run (dataset, scenario, methods, oracle recipe) on the one seed timed."""
    train = config["oracle_train"]
    return BenchRun(
        dataset=config["dataset"], data_dir=data_dir, model=config["model"],
        checkpoint=checkpoint, scenario=config["scenario"],
        forget_class=config["forget_class"] or 0, fraction=config["fraction"] or 0.1,
        seeds=[seed], tune_seed=config["tune_seed"], methods=config["methods"],
        oracle_epochs=train["epochs"], oracle_precision=train["precision"],
    )  # fmt: skip


def time_table(
    result: dict,
    run: BenchRun,
    settings: Settings,
    cache: Path,
    console: Console,
    sample: float = 0.0,
    retrain_precision: str | None = None,
    repeats: int = 1,
) -> dict:
    """Retrain, then every other method at its chosen lr, on `run`'s seed in this process; with
    `sample` > 0 each run stops about `sample` seconds in and its whole time is projected.
    `retrain_precision` trains the timed Retrain in another precision than the table's oracles
    (theirs by default): a table whose oracles are fp32 and methods bf16 can time Retrain as the
    methods ran, like with like. The original model and the methods stay the table's. With
    `repeats` > 1 the methods a time target compares run that many times (module docstring)."""
    cfg = result["config"]
    torch.set_num_threads(cfg["torch_threads"])  # the table's threads: its ratios' conditions
    b = setup_bench(run, settings, cache, console)
    differs = [d for k in _SAME for d in _differing(k, b.config.get(k), cfg.get(k))]
    if differs:
        raise TimingError(
            f"the params and data given are not the table's (they differ in {', '.join(differs)})"
            "; pass the params file and data the table was run with"
        )
    sb = seed_bench(b, run.seeds[0], b.ds.test, probe=False)
    oracle = retrain_precision or b.settings.train.precision
    methods = run.ordered_methods()
    compared = [m for m in methods if m == "rfa" or m in TIME_LIMITS]
    rounds = [methods] + [compared] * (repeats - 1)
    seen: dict[str, list[dict]] = {m: [] for m in methods}
    for n, names in enumerate(rounds, 1):
        for name in names:
            lr = cfg["lr_chosen"].get(name)
            console.print(f"timing {name}" + (f" at lr {lr}" if lr is not None else "")
                          + (f" (round {n} of {repeats})" if repeats > 1 else ""))  # fmt: skip
            before = os.getloadavg()[0]
            point = with_point(name, sb.cfg, b.settings, cfg["scenario"], lr)
            if name == "retrain":
                point = replace(point, train=point.train.model_copy(update={"precision": oracle}))
            timed = (
                _sampled(name, b, sb.task, point, sample) if sample else _whole(name, b, sb, point)
            )
            seen[name].append({**timed, "load_1m": [before, os.getloadavg()[0]]})
    limit = load_limit(cfg)
    quiet = all(max(t["load_1m"]) <= limit for each in seen.values() for t in each)
    runs = [{"method": m, "lr": cfg["lr_chosen"].get(m), **_median(seen[m])} for m in methods]
    return {"seed": run.seeds[0], "quiet": quiet, "load_limit": limit, "runs": runs,
            "retrain_precision": oracle, **({"repeats": repeats} if repeats > 1 else {}),
            **({"sample_seconds": sample} if sample else {})}  # fmt: skip


def _median(timed: list[dict]) -> dict:
    """The run with the median seconds (the lower of the middle two for an even count: a run
    that happened, with its own steps and CPU seconds), and every run's seconds where several."""
    middle = statistics.median_low(t["seconds"] for t in timed)
    kept = next(t for t in timed if t["seconds"] == middle)
    return kept if len(timed) == 1 else {**kept, "repeats": [t["seconds"] for t in timed]}


def _differing(key: str, given: object, table: object) -> list[str]:
    """The settings under `key` whose values differ (e.g. `rfa.retain_batch`), so the refusal
    says which line of the params file to look at, not only which section."""
    if isinstance(given, dict) and isinstance(table, dict):
        keys = sorted(given.keys() | table.keys())
        return [d for k in keys for d in _differing(f"{key}.{k}", given.get(k), table.get(k))]
    return [] if given == table else [key]


def _whole(name: str, b: Bench, sb: SeedBench, point: MethodConfig) -> dict:
    res, cpu = run_timed(name, b.original, sb.task, point)
    return {"seconds": res.seconds, "cpu_seconds": cpu, "steps": res.steps}


def _sampled(name: str, b: Bench, task: UnlearnTask, point: MethodConfig, budget: float) -> dict:
    """The method's first `budget` seconds or so, projected to its whole run
    (benchmarks/sampling.py); a run that ends sooner is measured whole."""
    layout = LAYOUTS.get(name)
    sampler = Sampler(budget, layout(task, point.baseline) if layout else None)
    try:
        res = get_method(name)(b.original, task, point, sampler)
    except Sampled:
        p = sampler.projection()
        seen = {k: p[k] for k in ("sampled_steps", "sampled_seconds", "per_step")}
        return {"seconds": p["seconds"], "cpu_seconds": p["cpu_seconds"], "steps": p["steps"],
                "sampled": seen}  # fmt: skip
    except LayoutError as e:
        raise TimingError(f"{name}: {e}") from None
    cpu = time.process_time() - sampler.start[1]
    return {"seconds": res.seconds, "cpu_seconds": cpu, "steps": res.steps, "sampled": None}
