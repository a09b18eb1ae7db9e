"""Which forget samples each RFA step reads."""

from __future__ import annotations

from collections.abc import Iterator

import torch


def forget_batches(
    perm: torch.Tensor,
    batch: int,
    gen: torch.Generator,
    weights: torch.Tensor | None = None,
    focus: float = 0.0,
) -> Iterator[torch.Tensor]:
    """Forget-batch indices (batch,), forever.

    Passes over Df in random order (starting with `perm`), of which a `focus` share of every batch
    is instead drawn with replacement in proportion to `weights` (per-sample, e.g.
    target_divergence). Why: when the few edits that matter are a small share of Df, a uniform
    batch holds one or two of them and Adam's step follows the noise of the rest. focus 0 (or no
    weights) draws plain passes; weights all zero draw uniformly.
    """
    n = len(perm)
    n_focus = round(focus * batch) if weights is not None else 0
    plain = batch - n_focus
    if n_focus:
        w = weights.double() if float(weights.sum()) > 0 else torch.ones(n, dtype=torch.float64)
    cursor = 0
    while True:
        if cursor + plain > n:
            perm, cursor = torch.randperm(n, generator=gen), 0
        idx = perm[cursor : cursor + plain]
        cursor += plain
        if n_focus:
            idx = torch.cat([idx, torch.multinomial(w, n_focus, replacement=True, generator=gen)])
        yield idx
