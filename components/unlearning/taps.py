"""Feature taps: read a model's intermediate outputs during its forward passes (pure torch).

RFA aligns the student with the teacher at named sub-modules ("taps"), not only at the logits;
these helpers record those outputs, pool them to one vector per sample and run the no-grad
teacher passes the targets are built from.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager

import torch
from torch import nn

from components.runtime import DevicePolicy


@contextmanager
def feature_taps(model: nn.Module, names: tuple[str, ...]) -> Iterator[dict[str, torch.Tensor]]:
    """Record the outputs of the named sub-modules during forward passes.

    Names are module paths of the plain model (`block2`); a peft-wrapped model is searched by
    suffix so the same names work for teacher and student.
    """
    modules = dict(model.named_modules())
    found: dict[str, nn.Module] = {}
    for name in names:
        match = modules.get(name) or next(
            (m for k, m in modules.items() if k.endswith("model." + name)), None
        )
        if match is None:
            raise KeyError(f"feature tap {name!r} is not a module of {type(model).__name__}")
        found[name] = match
    store: dict[str, torch.Tensor] = {}
    handles = [
        m.register_forward_hook(lambda _m, _i, out, n=n: store.__setitem__(n, out))
        for n, m in found.items()
    ]
    try:
        yield store
    finally:
        for h in handles:
            h.remove()


def pooled(f: torch.Tensor) -> torch.Tensor:
    """(B, C, H, W) -> (B, C) channel means; (B, T, D) -> (B, D) token means; (B, C) as is."""
    return POOLS[f.dim()](f)


POOLS: dict[int, Callable[[torch.Tensor], torch.Tensor]] = {
    2: lambda f: f,
    3: lambda f: f.mean(dim=1),  # transformer blocks: (B, tokens, hidden)
    4: lambda f: f.mean(dim=(2, 3)),  # conv blocks
}


def logits_and_taps(
    model: nn.Module,
    x: torch.Tensor,
    taps: tuple[str, ...],
    policy: DevicePolicy,
    device: torch.device,
    run: Callable[[torch.Tensor], torch.Tensor] | None = None,
) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """No-grad pass in chunks of `policy.infer_batch`, in the run's precision (autocast here, so
    no caller can leave it out): logits (N, K) and pooled taps {tap: (N, C)} on CPU, in fp32
    whatever precision the pass ran in.

    `run` replaces model(x) (the suffix, when x holds cached prefix activations).
    """
    run, batch = run or model, policy.infer_batch
    outs: list[torch.Tensor] = []
    feats: dict[str, list[torch.Tensor]] = {t: [] for t in taps}
    with torch.no_grad(), policy.autocast(device), feature_taps(model, taps) as store:
        for i in range(0, max(len(x), 1), batch):  # an empty x still runs once: (0, K) outputs
            outs.append(run(x[i : i + batch]).float().cpu())
            for t in taps:
                feats[t].append(pooled(store[t].float()).cpu())  # pooled in fp32
    return torch.cat(outs), {t: torch.cat(v) for t, v in feats.items()}


@torch.no_grad()
def prefix_pass(
    prefix: Callable[[torch.Tensor], torch.Tensor],
    x: torch.Tensor,
    policy: DevicePolicy,
    device: torch.device,
) -> torch.Tensor:
    """The frozen prefix's activations for x (N, ...) in chunks, kept on the device."""
    batch = policy.infer_batch
    with policy.autocast(device):
        return torch.cat([prefix(x[i : i + batch]).float() for i in range(0, len(x), batch)])
