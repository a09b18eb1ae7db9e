"""What one `unlearn bench` runs: the command line's choices, validated before any work."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from components.unlearning.registry import METHODS


class BenchRun(BaseModel):
    """What one `unlearn bench` runs (the command line's choices, validated)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    dataset: Literal["digits", "fashion_mnist", "cifar10"] = "digits"
    data_dir: Path | None = None
    model: str = "small_cnn"
    checkpoint: Path | None = None
    scenario: Literal["class", "sample"] = "class"
    forget_class: int = 0
    fraction: float = Field(0.1, gt=0, lt=1)
    seeds: list[int] = Field([1], min_length=1)  # reported; nothing is tuned on them
    tune_seed: int = 0  # its forget set and the validation split choose every grid point
    methods: list[str] = Field(min_length=1)
    out: Path = Path("benchmarks/results/run")
    oracle_epochs: int | None = Field(None, ge=1)
    oracle_precision: Literal["fp32", "bf16"] | None = None
    lira_shadows: int = Field(0, ge=0)  # LiRA's shadow models (benchmarks/shadows.py); 0 = off
    # Train the Retrain oracles of the tuning and reported seeds where not cached, and stop: a
    # GPU machine trains a table's oracles, which a CPU's bench then loads from the cache.
    oracles_only: bool = False

    @field_validator("methods")
    @classmethod
    def _known(cls, names: list[str]) -> list[str]:
        unknown = [m for m in names if m not in METHODS]
        if unknown:
            raise ValueError(f"unknown methods {unknown}; known: {sorted(METHODS)}")
        return names

    @model_validator(mode="after")
    def _reported_seeds_are_not_tuned_on(self) -> BenchRun:
        if self.tune_seed in self.seeds:
            raise ValueError(
                f"seed {self.tune_seed} chooses the hyper-parameters (tune_seed); report others"
            )
        return self

    @model_validator(mode="after")
    def _lira_needs_samples_and_a_known_recipe(self) -> BenchRun:
        if self.lira_shadows and self.scenario != "sample":
            raise ValueError("LiRA is a per-example attack: --lira-shadows needs --scenario sample")
        if self.lira_shadows % 2:  # each example inside exactly half of them (shadows.halves)
            raise ValueError(f"--lira-shadows must be even, got {self.lira_shadows}")
        if self.lira_shadows and self.checkpoint is not None:
            raise ValueError(
                "LiRA's shadows are trained like the base model: a pre-trained checkpoint's "
                "recipe is unknown here, so --lira-shadows needs a base model the bench trains"
            )
        return self

    def ordered_methods(self) -> list[str]:
        """Retrain first: every other method's gaps are measured against it."""
        return (["retrain"] if "retrain" in self.methods else []) + [
            m for m in self.methods if m != "retrain"
        ]
