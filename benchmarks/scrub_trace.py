"""SCRUB's loop on CIFAR-10 / ResNet-20 (Df: 10 % random of seed 0, or class 0), with accuracy
checks inside it.

    python -m benchmarks.scrub_trace --lr 0.0005 --epochs 1 [--scenario class]

`components/unlearning/baselines.scrub`'s max and min passes (its `ScrubLoop`, the recipe of
`benchmarks/params/cifar10.yaml`), printing Acc on 1,000 images each of Dr, Df and the
validation split every `--every` max steps and every 80 min steps: where in the loop a grid point
loses Dr. One JSON line per check. Not a benchmark: no Retrain, no report split.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import numpy as np
import torch
import typer
import yaml

from benchmarks.cache import forget_ids, load_bench_data, original_model
from components.data import Split
from components.forget import extract_forget_set
from components.models import to_input
from components.settings import parse_settings
from components.unlearning.baselines import ScrubLoop

CKPT = "models/resnet_cifar10_akamaster/resnet20-12fca82f.th"


@torch.no_grad()
def _acc(model: torch.nn.Module, split: Split) -> float:
    was = model.training
    out = torch.cat(
        [model.eval()(to_input(split.x[i : i + 250])) for i in range(0, len(split), 250)]
    )
    model.train(was)
    return round(float((out.argmax(1).numpy() == split.y).mean() * 100), 1)


def _sample(split: Split, rng: np.random.Generator) -> Split:
    return split.take(rng.choice(len(split), 1000, replace=False))


def main(
    lr: float = typer.Option(0.0005, help="SCRUB's lr (the reference's 5e-4 by default)."),
    epochs: int = typer.Option(1, help="Epochs to trace (each: max pass if within msteps, min)."),
    precision: str = typer.Option("bf16", help="fp32 | bf16, as the table runs it."),
    every: int = typer.Option(35, help="Max steps between checks."),
    scenario: str = typer.Option("sample", help="sample (10 % random) | class (class 0)."),
    shared: Path = typer.Option(Path("../shared"), help="Folder with datasets/ and models/."),
    augment: bool = typer.Option(True, help="Crop + flip Dr and Df batches, as the bench does."),
) -> None:
    if scenario not in ("sample", "class"):
        raise typer.BadParameter(f"{scenario!r}: sample or class", param_hint="--scenario")
    for need in ("datasets/cifar10", CKPT):  # before any work, not a traceback from the loaders
        if not (shared / need).exists():
            raise typer.BadParameter(f"{shared / need} is missing", param_hint="--shared")
    s = parse_settings(
        yaml.safe_load(Path("benchmarks/params/cifar10.yaml").read_text()), source="cifar10"
    )
    data = load_bench_data("cifar10", str(shared / "datasets/cifar10"), s.bench.heldout_seed)
    cpu = torch.device("cpu")
    orig, _ = original_model(
        data.ds, "resnet20", str(shared / CKPT), Path(".cache/bench"), s.train, cpu
    )
    fs = extract_forget_set(data.ds.train, forget_ids(data.ds, scenario, 0, 0.1, 0), 0.5)
    rng = np.random.default_rng(0)
    checks = {"dr": _sample(fs.retain, rng), "df": _sample(fs.forget, rng),
              "val": _sample(data.validation, rng)}  # fmt: skip
    # model_copy skips validation: --lr 0 (no weight change) is allowed here, not in a bench.
    update = {**s.bench.recipes["scrub"], "lr": lr, "precision": precision, "device": "cpu"}
    loop = ScrubLoop(orig, s.bench.baseline.model_copy(update=update), augment and s.train.augment)
    decay = torch.optim.lr_scheduler.MultiStepLR(loop.opt, list(loop.cfg.lr_decay_epochs), 0.1)
    t0, last = time.time(), [0.0]

    def check(tag: str, loss: float) -> None:
        accs = {k: _acc(loop.student, v) for k, v in checks.items()}
        print(json.dumps({"at": tag, "loss": round(loss, 3), **accs, "s": round(time.time() - t0)}))

    def every_n(phase: str, n: int, sign: float):  # a StepHook: a check every n steps
        def hook(k: int, loss: torch.Tensor) -> None:
            last[0] = sign * loss.item()
            if k % n == 0:
                check(f"epoch {epoch} {phase} step {k}", last[0])

        return hook

    check("start", 0.0)
    for epoch in range(epochs):
        if epoch < loop.cfg.scrub_max_steps:
            loop.max_pass(fs.forget, every_n("max", every, -1.0))
        loop.min_pass(fs.retain, every_n("min", 80, 1.0))
        decay.step()
        check(f"epoch {epoch} end", last[0])


if __name__ == "__main__":
    typer.run(main)
