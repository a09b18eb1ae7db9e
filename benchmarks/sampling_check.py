"""How far `bench-time --sample-seconds` projections land from whole runs, on a table's setup.

    python -m benchmarks.sampling_check benchmarks/results/cifar10-resnet20-class0-scrub \
        --methods scrub,rfa --budgets 30,60,120 --data-dir ../shared/datasets/cifar10 \
        --checkpoint ../shared/models/resnet_cifar10_akamaster/resnet20-12fca82f.th \
        --params benchmarks/params/cifar10.yaml

Runs each method once in full at the table's chosen lr (or `--lr`) on one seed, recording every
progress report, and prints per budget the projection that a run stopped there would have made
against the run's measured seconds (wall and CPU): one JSON line per method and budget. The
method's settings come from `--params`, not checked against the table's (this checks the
projection, it times no table).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import torch
import typer
from rich.console import Console

from benchmarks.harness import seed_bench, setup_bench
from benchmarks.sampling import LAYOUTS, Sampler, replay
from benchmarks.selection import with_point
from benchmarks.timing import bench_run_of
from components.settings import load_settings
from components.unlearning.registry import get_method
from pipelines.env import quiet_environment


def main(
    table: Path = typer.Argument(..., help="A bench output folder (its results.json)."),
    methods: str = typer.Option("rfa", help="Comma-separated methods to run in full."),
    budgets: str = typer.Option("30,60,120", help="Comma-separated sample budgets, seconds."),
    seed: int = typer.Option(1, help="The seed whose forget set is run."),
    lr: float | None = typer.Option(None, help="The lr for every method (default: the table's)."),
    data_dir: Path | None = typer.Option(None, help="The table's dataset folder."),
    checkpoint: Path | None = typer.Option(None, help="The table's pre-trained checkpoint."),
    params: Path = typer.Option(Path("params.yaml"), help="Settings for the methods."),
) -> None:
    quiet_environment()
    result = json.loads((table / "results.json").read_text())
    cfg = result["config"]
    names = methods.split(",")
    unchosen = [m for m in names if lr is None and m not in cfg["lr_chosen"]]
    if unchosen:  # the params file's lr would run unannounced, not the table's setup
        typer.echo(f"error: {table} chose no lr for {', '.join(unchosen)}; pass --lr", err=True)
        raise typer.Exit(2)
    torch.set_num_threads(cfg["torch_threads"])
    run = bench_run_of(cfg, data_dir, checkpoint, seed)
    b = setup_bench(run, load_settings(params), Path(".cache") / "bench", Console(stderr=True))
    sb = seed_bench(b, seed, b.ds.test, probe=False)
    for name in names:
        chosen = lr if lr is not None else cfg["lr_chosen"][name]
        point = with_point(name, sb.cfg, b.settings, cfg["scenario"], chosen)
        layout = LAYOUTS.get(name)
        whole = Sampler(float("inf"), layout(sb.task, point.baseline) if layout else None)
        get_method(name)(b.original, sb.task, point, whole)
        wall, cpu = time.perf_counter() - whole.start[0], time.process_time() - whole.start[1]
        for budget in (float(x) for x in budgets.split(",")):
            p = replay(whole, budget)
            line = {"method": name, "lr": chosen, "budget": budget, "seconds": round(wall, 1),
                    "cpu_seconds": round(cpu, 1), "steps": whole.total}  # fmt: skip
            if p is not None:
                line |= {"projected": round(p["seconds"], 1),
                         "projected_cpu": round(p["cpu_seconds"], 1),
                         "error_pct": round(100 * (p["seconds"] / wall - 1), 1),
                         "cpu_error_pct": round(100 * (p["cpu_seconds"] / cpu - 1), 1),
                         "sampled_steps": p["sampled_steps"]}  # fmt: skip
            print(json.dumps(line), flush=True)


if __name__ == "__main__":
    typer.run(main)
