"""What every unlearning method takes and returns (RFA and the baselines alike)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

import torch
from torch import nn

from components.data import Split
from components.runtime import ProgressFn
from components.settings import BaselineSettings, LoraSettings, RfaSettings, TrainSettings
from components.training import Checkpoints

Scenario = Literal["class", "sample"]


@dataclass(frozen=True)
class UnlearnTask:
    """What to forget: Df, Dr, the non-member reference split and the scenario."""

    scenario: Scenario
    forget: Split
    retain: Split
    heldout: Split
    forget_classes: tuple[int, ...] = ()

    def __post_init__(self) -> None:
        if self.scenario == "class" and not self.forget_classes:
            raise ValueError("class unlearning needs at least one forget class")


@dataclass
class UnlearnResult:
    model: nn.Module  # merged, plain module (eval mode, CPU)
    adapter: dict[str, torch.Tensor]  # LoRA weights for audit; empty for full-weight methods
    seconds: float
    trainable_fraction: float
    steps: int
    device: str
    history: list[dict[str, float]] = field(default_factory=list)
    # Why training ended: "steps" (ran its schedule), "target" (the forget subset reached the
    # target's accuracy), "stalled" (no progress for stop_patience checks). Shown to reviewers.
    stop_reason: str = "steps"


@dataclass(frozen=True)
class MethodConfig:
    """Everything any registered method may read; each takes only its own part."""

    lora: LoraSettings = LoraSettings()
    rfa: RfaSettings = RfaSettings()
    baseline: BaselineSettings = BaselineSettings()
    train: TrainSettings = TrainSettings()  # the Retrain oracle's schedule
    # Where Retrain saves each epoch and resumes from (the bench's oracles); None: it does not.
    checkpoints: Checkpoints | None = None


# The one signature of every registered method: (original, task, config, progress) -> result.
Method = Callable[[nn.Module, UnlearnTask, MethodConfig, ProgressFn], UnlearnResult]
