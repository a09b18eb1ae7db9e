"""RFA across several processes with torchrun: gloo between CPU processes, NCCL between GPUs.

`rfa_processes(...)` writes the model and the task to a scratch folder, starts
`torchrun --standalone --nproc-per-node N -m pipelines.distributed IN OUT`, and reads back what
rank 0 wrote. Each process runs the same `components.unlearning.rfa.rfa` on its share of every
batch (components/unlearning/parallel.py); one process (the default) never starts torchrun.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch
from torch import nn

from components.settings import LoraSettings, RfaSettings
from components.unlearning.parallel import Shard
from components.unlearning.types import UnlearnResult, UnlearnTask


class DistributedError(RuntimeError):
    """The torchrun group failed; the last lines of its output say why."""


def rfa_processes(
    original: nn.Module, task: UnlearnTask, lora: LoraSettings, cfg: RfaSettings, processes: int
) -> UnlearnResult:
    """`rfa` data-parallel over `processes` local processes (the same result as one, up to float
    summation order, when the batches divide among them)."""
    sc = cfg.scenario(task.scenario)  # unequal shares are refused here, before any process starts
    Shard(0, processes).check(forget_batch=sc.forget_batch, retain_batch=cfg.retain_batch)
    with tempfile.TemporaryDirectory(prefix="unlearn-ddp-") as tmp:
        src, dst = Path(tmp) / "in.pt", Path(tmp) / "out.pt"
        torch.save({"model": original, "task": task, "lora": lora, "cfg": cfg}, src)
        run = [sys.executable, "-m", "torch.distributed.run", "--standalone"]
        cmd = [*run, f"--nproc-per-node={processes}", "-m", "pipelines.distributed", src, dst]
        # TMPDIR: torchrun's own log folders (torchelastic_*) go in the scratch folder and leave
        # with it, instead of one left in /tmp per batch.
        env = {**os.environ, "TMPDIR": tmp}
        proc = subprocess.run([str(c) for c in cmd], capture_output=True, text=True, env=env)
        if proc.returncode != 0 or not dst.is_file():
            lines = [ln for ln in (proc.stderr or proc.stdout).splitlines() if ln.strip()]
            tail = [ln for ln in lines if "Error" in ln][-2:] or lines[-3:]  # the child's error
            raise DistributedError(
                f"RFA over {processes} processes failed (exit {proc.returncode}): "
                + " | ".join(tail)
            )
        return torch.load(dst, weights_only=False)


def main(src: str, dst: str) -> None:
    """One rank: join the group torchrun describes in the environment, run RFA, rank 0 saves."""
    import torch.distributed as dist

    from components.unlearning.rfa import rfa

    job = torch.load(src, weights_only=False)
    cuda = job["cfg"].device != "cpu" and torch.cuda.is_available()
    if cuda:  # one GPU per process
        torch.cuda.set_device(int(os.environ["LOCAL_RANK"]))
    backend = "nccl" if cuda else "gloo"
    dist.init_process_group(backend)
    try:
        result = rfa(job["model"], job["task"], job["lora"], job["cfg"])
        if dist.get_rank() == 0:  # the certificate says where it ran: "cpu x2 (gloo)"
            where = f"{result.device} x{dist.get_world_size()} ({backend})"
            torch.save(dataclasses.replace(result, device=where), dst)
    finally:
        dist.destroy_process_group()


if __name__ == "__main__":
    main(*sys.argv[1:3])
