"""Pieces every model module shares, kept apart so models.py and resnet_cifar.py import them
without importing each other."""

from __future__ import annotations

import torch
from torch import nn


class ModelError(ValueError):
    """A model spec or checkpoint cannot be built or loaded."""


class Normalise(nn.Module):
    """x in [0, 1] -> (x - mean) / std, with the statistics stored in the checkpoint."""

    def __init__(self, mean: list[float], std: list[float]) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std
