"""Data-parallel RFA steps: each process takes its share of every global batch and the LoRA
gradients are averaged across processes, which is the all-reduce torch's DDP performs.

Why not the `DistributedDataParallel` wrapper itself: the student runs in pieces (a cached frozen
prefix, then `suffix(h)` as a bound method, components/unlearning/lora.frozen_split), and DDP
syncs only through its own `forward`. The collective is the same `all_reduce`, over gloo on CPU
processes or NCCL on GPUs, set up by `torchrun` (pipelines/distributed.py).

Every process draws the same global batch from the same seeded generator and keeps the rows
`rank::world`; the per-sample losses are batch means, so the average of the per-process
gradients is the gradient of the global batch. With equal shares (batches divisible by the number
of processes) the run matches one process at the same global batch, up to float summation order.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class Shard:
    """This process's place in the group: rank `rank` of `world` (0 of 1 alone)."""

    rank: int = 0
    world: int = 1

    def take(self, idx: torch.Tensor) -> torch.Tensor:
        """This process's rows of a global batch of indices."""
        return idx if self.world == 1 else idx[self.rank :: self.world]

    def average_grads(self, params: list[torch.nn.Parameter]) -> None:
        """Replace each gradient by its mean over the processes (no-op alone)."""
        if self.world == 1:
            return
        import torch.distributed as dist

        grads = [p.grad for p in params if p.grad is not None]
        flat = torch.cat([g.reshape(-1) for g in grads])  # one collective, not one per tensor
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        flat /= self.world
        offset = 0
        for g in grads:
            g.copy_(flat[offset : offset + g.numel()].view_as(g))
            offset += g.numel()

    def mean(self, values: dict[str, torch.Tensor | float]) -> dict[str, torch.Tensor | float]:
        """Per-process batch means -> the global batch's means (equal shares), for the record."""
        if self.world == 1:
            return values
        import torch.distributed as dist

        flat = torch.tensor([float(v) for v in values.values()], dtype=torch.float64)
        dist.all_reduce(flat, op=dist.ReduceOp.SUM)
        return dict(zip(values, (flat / self.world).tolist(), strict=True))

    def check(self, **batches: int) -> None:
        """Equal shares, or the average of the shares' means is not the global mean."""
        for name, size in batches.items():
            if size % self.world:
                raise ValueError(
                    f"{name} {size} does not divide among {self.world} processes; choose a "
                    "multiple so every process takes an equal share of each batch"
                )


def current_shard() -> Shard:
    """The process group torchrun set up, if any."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return Shard(dist.get_rank(), dist.get_world_size())
    return Shard()
