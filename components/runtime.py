"""Device and seed, resolved explicitly once; progress as an injected callback."""

from __future__ import annotations

import random
from typing import Callable

import numpy as np
import torch


def no_progress(step: int, total: int, values: dict[str, float]) -> None:
    return None


ProgressFn = Callable[[int, int, dict[str, float]], None]


def resolve_device(name: str) -> torch.device:
    """"auto" -> cuda when present, else cpu. Asking for cuda without one is an error, not a fallback."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("device 'cuda' requested but no CUDA device is available; use 'auto' or 'cpu'")
    return torch.device(name)


def set_seed(seed: int) -> torch.Generator:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)
