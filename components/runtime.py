"""Device and seed, resolved explicitly once; progress as an injected callback."""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass

import numpy as np
import torch


def no_progress(step: int, total: int, values: dict[str, float]) -> None:
    return None


ProgressFn = Callable[[int, int, dict[str, float]], None]


@contextmanager
def timed(timings: dict[str, float] | None, key: str) -> Iterator[None]:
    """Add the wall seconds of the block to timings[key] (nothing when timings is None)."""
    t0 = time.perf_counter()
    try:
        yield
    finally:
        if timings is not None:
            timings[key] = round(timings.get(key, 0.0) + time.perf_counter() - t0, 3)


def resolve_device(name: str) -> torch.device:
    """ "auto" -> cuda when present, else cpu. cuda without one is an error, not a fallback."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(
            "device 'cuda' requested but no CUDA device is available; use 'auto' or 'cpu'"
        )
    return torch.device(name)


def set_seed(seed: int) -> torch.Generator:
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


@dataclass(frozen=True)
class DevicePolicy:
    """How a device runs the unlearning loop. CUDA: bf16 autocast (no loss scaling needed, unlike
    fp16) and channels_last convolutions (the layout tensor cores want). CPU: plain fp32."""

    memory_format: torch.memory_format
    autocast_dtype: torch.dtype | None
    # Chunk size of no-grad passes (teacher targets, frozen prefix, evaluation). On the CPU small
    # chunks stay in cache: one thread ran the small CNN 2x and ResNet-20 2.1x faster per image at
    # 64 than at 1024 (measured 2026-11-30); a GPU wants large ones.
    infer_batch: int = 1024

    @property
    def precision(self) -> str:
        return "bf16" if self.autocast_dtype == torch.bfloat16 else "fp32"

    def prepare(self, model: torch.nn.Module) -> torch.nn.Module:
        return model.to(memory_format=self.memory_format)

    def layout(self, x: torch.Tensor) -> torch.Tensor:
        return x.contiguous(memory_format=self.memory_format) if x.dim() == 4 else x

    def autocast(self, device: torch.device) -> AbstractContextManager:
        if self.autocast_dtype is None:
            return nullcontext()
        return torch.autocast(device_type=device.type, dtype=self.autocast_dtype)


DEVICE_POLICIES: dict[str, DevicePolicy] = {
    "cpu": DevicePolicy(torch.contiguous_format, None, infer_batch=64),
    "cuda": DevicePolicy(torch.channels_last, torch.bfloat16, infer_batch=1024),
}


def device_policy(device: torch.device) -> DevicePolicy:
    return DEVICE_POLICIES.get(device.type, DEVICE_POLICIES["cpu"])


class PrecisionError(RuntimeError):
    """A precision this machine cannot run well (the CLI prints it as one line): `problem`, then
    where to change it, which a command with its own options says in its own terms."""

    def __init__(self, problem: str, fix: str) -> None:
        super().__init__(f"{problem}; {fix}")
        self.problem = problem


def _bf16_policy(device: torch.device) -> DevicePolicy:
    # A CPU without AVX512-BF16 / AMX emulates bf16 and runs slower than fp32: refuse, don't crawl.
    if device.type == "cpu" and not bf16_cpu_supported():
        raise PrecisionError(
            "precision 'bf16' needs a CPU with AVX512-BF16 or AMX (this one has neither)",
            "set fp32 (train.precision for training, rfa.precision for unlearning)",
        )
    return DevicePolicy(
        torch.channels_last, torch.bfloat16, infer_batch=device_policy(device).infer_batch
    )


def bf16_cpu_supported() -> bool:
    return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())


# How supervised training (base model, Retrain oracle) runs, by `train.precision`. Measured on this
# machine's Xeon (AMX), ResNet-20, batch 128, one thread: fp32 679 ms/step, bf16 + channels_last
# 268.
TRAIN_PRECISIONS: dict[str, Callable[[torch.device], DevicePolicy]] = {
    "fp32": lambda device: DevicePolicy(
        torch.contiguous_format, None, device_policy(device).infer_batch
    ),
    "bf16": _bf16_policy,
}


# How an unlearning method runs, RFA and every baseline alike (`rfa.precision`): auto is the
# device's own policy (CUDA: bf16 autocast; CPU: fp32), fp32 / bf16 force one on any device, so a
# benchmark can run every method under one precision.
PRECISIONS: dict[str, Callable[[torch.device], DevicePolicy]] = {
    "auto": device_policy,
    **TRAIN_PRECISIONS,
}


def precision_policy(device: torch.device, precision: str) -> DevicePolicy:
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choose one of {sorted(PRECISIONS)}")
    return PRECISIONS[precision](device)
