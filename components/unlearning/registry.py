"""Unlearning methods behind one signature, in a registry (`METHODS`).

Every method takes the frozen original model and an `UnlearnTask` and returns an
`UnlearnResult` whose `model` is a plain, merged module ready to serve.
"""

from __future__ import annotations

from torch import nn

from components.runtime import ProgressFn, no_progress
from components.unlearning.baselines import BASELINES, Baseline, retrain
from components.unlearning.rfa import rfa
from components.unlearning.types import Method, MethodConfig, UnlearnResult, UnlearnTask


def _rfa(
    original: nn.Module, task: UnlearnTask, cfg: MethodConfig, progress: ProgressFn = no_progress
) -> UnlearnResult:
    return rfa(original, task, cfg.lora, cfg.rfa, progress)


def _baseline(fn: Baseline) -> Method:
    def run(
        original: nn.Module,
        task: UnlearnTask,
        cfg: MethodConfig,
        progress: ProgressFn = no_progress,
    ) -> UnlearnResult:
        return fn(original, task, cfg.baseline, cfg.train, progress)

    run.__doc__ = fn.__doc__
    return run


def _retrain(
    original: nn.Module, task: UnlearnTask, cfg: MethodConfig, progress: ProgressFn = no_progress
) -> UnlearnResult:
    return retrain(original, task, cfg.baseline, cfg.train, progress, cfg.checkpoints)


_retrain.__doc__ = retrain.__doc__

METHODS: dict[str, Method] = {
    "rfa": _rfa,
    **{name: _baseline(fn) for name, fn in BASELINES.items()},
    "retrain": _retrain,  # the one baseline that also reads cfg.checkpoints
}


def get_method(name: str) -> Method:
    """The registered method `name`; ValueError naming the choices otherwise."""
    try:
        return METHODS[name]
    except KeyError:
        raise ValueError(
            f"unknown unlearning method {name!r}; choose one of {sorted(METHODS)}"
        ) from None
