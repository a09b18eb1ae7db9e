"""Every unlearning method in fp32 and under bf16 autocast (`rfa.precision`), side by side in one
process on this CPU, the precisions alternated within each repeat: what running a table's
methods in bf16 buys.

    .venv/bin/python -m benchmarks.precision_timing [--table cifar10] [--repeats 2] [--threads 1]

The model is the table's (`--table`: CIFAR-10's ResNet-20 or Fashion-MNIST's small CNN) as its
benchmarks/params file builds it (LoRA targets, recipes and RFA settings from that file), randomly
initialised, on random images of the dataset's shape: a step's cost does not depend on the
weights' or pixels' values, and nothing needs ../shared. Each method runs one epoch of its recipe
(RFA: `--rfa-steps` steps). Writes results.json; timings, not a test.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import typer

from components.data import Split
from components.models import build_model, make_spec
from components.runtime import bf16_cpu_supported
from components.settings import BaselineSettings, Settings, load_settings
from components.unlearning.baselines import BASELINES
from components.unlearning.rfa import rfa
from components.unlearning.types import UnlearnTask


@dataclass(frozen=True)
class Setup:
    """One table's model (as its params file builds it) and its images' shape."""

    params: Path
    arch: str
    shape: tuple[int, int, int]  # one image: channels, height, width
    out: Path


SETUPS = {
    "cifar10": Setup(Path("benchmarks/params/cifar10.yaml"), "resnet20", (3, 32, 32),
                     Path("benchmarks/results/precision-timing")),
    "fashion_mnist": Setup(Path("benchmarks/params/fashion_mnist.yaml"), "small_cnn", (1, 28, 28),
                           Path("benchmarks/results/precision-timing-fashion_mnist")),
}  # fmt: skip
BASELINE_NAMES = ("ft", "neggrad", "rl", "salun", "scrub")


def _split(n: int, rng: np.random.Generator, prefix: str, shape: tuple) -> Split:
    x = rng.integers(0, 256, (n, *shape), dtype=np.uint8)
    y = rng.integers(0, 10, n).astype(np.int64)
    return Split(x, y, np.array([f"{prefix}{i}" for i in range(n)]))


def _task(n_train: int, shape: tuple) -> UnlearnTask:
    rng = np.random.default_rng(0)
    train, heldout = _split(n_train, rng, "t", shape), _split(1000, rng, "h", shape)
    forget = train.y == 0
    return UnlearnTask("class", train.take(forget), train.take(~forget), heldout, (0,))


def _runner(name: str, s: Settings, rfa_steps: int):
    if name == "rfa":
        rfa_cfg = s.rfa.model_copy(update={"min_steps": rfa_steps, "max_steps": rfa_steps})
        return lambda model, task, precision: rfa(
            model, task, s.lora, rfa_cfg.model_copy(update={"precision": precision})
        )
    recipe = {**s.bench.recipes[name], "epochs": 1, "device": "cpu"}
    cfg = BaselineSettings.model_validate({**s.bench.baseline.model_dump(), **recipe})
    return lambda model, task, precision: BASELINES[name](
        model, task, cfg.model_copy(update={"precision": precision})
    )


def main(
    table: str = typer.Option("cifar10", help="cifar10 | fashion_mnist: whose model and params."),
    repeats: int = typer.Option(2, help="Runs of each method in each precision."),
    threads: int = typer.Option(1, help="torch threads (a table's process runs with 1 of 2)."),
    n_train: int = typer.Option(2560, help="Synthetic training images (about a tenth forget)."),
    rfa_steps: int = typer.Option(40, help="RFA's steps per run."),
    out: Path | None = typer.Option(None, help="Output folder (default: the table's own)."),
) -> None:
    if not bf16_cpu_supported():
        raise typer.BadParameter("this CPU has no AVX512-BF16 / AMX: bf16 would be emulated")
    if table not in SETUPS:
        raise typer.BadParameter(f"--table must be one of {sorted(SETUPS)}")
    setup = SETUPS[table]
    torch.set_num_threads(threads)
    s = load_settings(setup.params)
    task = _task(n_train, setup.shape)
    model = build_model(make_spec(setup.arch, task.retain.x, 10, s.model.width))
    rows = {}
    for name in ("rfa", *BASELINE_NAMES):
        run = _runner(name, s, rfa_steps)
        run(model, task, "fp32")  # warm-up: first-call allocations and kernel choices
        seconds: dict[str, list[float]] = {"fp32": [], "bf16": []}
        steps = 0
        for r in range(repeats):
            for precision in ("fp32", "bf16") if r % 2 == 0 else ("bf16", "fp32"):
                t0 = time.perf_counter()
                steps = run(model, task, precision).steps
                seconds[precision].append(time.perf_counter() - t0)
        best = {p: min(v) for p, v in seconds.items()}
        rows[name] = {"steps": steps, **{f"{p}_seconds": round(v, 2) for p, v in best.items()},
                      "bf16_speedup": round(best["fp32"] / best["bf16"], 2)}  # fmt: skip
        print(name, json.dumps(rows[name]), flush=True)
    result = {"table": table, "threads": threads, "repeats": repeats, "n_train": n_train,
              "forget": len(task.forget), "retain": len(task.retain), "methods": rows}  # fmt: skip
    out = out or setup.out
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(result, indent=1) + "\n")


if __name__ == "__main__":
    typer.run(main)
