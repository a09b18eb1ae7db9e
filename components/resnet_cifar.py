"""CIFAR ResNet-20/32 (He et al. 2016, option-A shortcuts) with the module names of the
akamaster checkpoints in ../shared/models, so they load with `weights_only=True`
(components/checkpoints.load_akamaster)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from components.layers import Normalise

# The checkpoints were trained with ImageNet normalisation constants (their README).
IMAGENET_MEAN = [0.485, 0.456, 0.406]
IMAGENET_STD = [0.229, 0.224, 0.225]
DEPTHS = {"resnet20": 3, "resnet32": 5}


class _ShortcutA(nn.Module):
    """Parameter-free shortcut: stride-2 subsample, zero-pad planes // 4 channels on each side."""

    def __init__(self, planes: int) -> None:
        super().__init__()
        self.pad = planes // 4

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.pad(x[:, :, ::2, ::2], (0, 0, 0, 0, self.pad, self.pad))


class BasicBlock(nn.Module):
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.shortcut = _ShortcutA(cout) if stride != 1 or cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + self.shortcut(x))


class ResNetCifar(nn.Module):
    """Input (B, 3, 32, 32) in [0, 1]; taps `layer1..3`, penultimate `pool` (B, 64)."""

    def __init__(
        self,
        depth_n: int,
        num_classes: int = 10,
        mean: list[float] = IMAGENET_MEAN,
        std: list[float] = IMAGENET_STD,
    ) -> None:
        super().__init__()
        self.norm = Normalise(list(mean), list(std))
        self.conv1 = nn.Conv2d(3, 16, 3, 1, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(16)
        self.layer1 = nn.Sequential(*[BasicBlock(16, 16, 1) for _ in range(depth_n)])
        self.layer2 = nn.Sequential(
            BasicBlock(16, 32, 2), *[BasicBlock(32, 32, 1) for _ in range(depth_n - 1)]
        )
        self.layer3 = nn.Sequential(
            BasicBlock(32, 64, 2), *[BasicBlock(64, 64, 1) for _ in range(depth_n - 1)]
        )
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.linear = nn.Linear(64, num_classes)
        for m in self.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                nn.init.kaiming_normal_(m.weight)

    # The modules `prefix` runs. LoRA lives in layer3 + linear, so for RFA this part is frozen and
    # a pure function of the image: computed once per image and cached
    # (components/unlearning/lora.py).
    PREFIX_MODULES = ("norm", "conv1", "bn1", "layer1", "layer2")

    def prefix(self, x: torch.Tensor) -> torch.Tensor:  # (B, 3, 32, 32) -> (B, 32, 16, 16)
        return self.layer2(self.layer1(F.relu(self.bn1(self.conv1(self.norm(x))))))

    def suffix(self, h: torch.Tensor) -> torch.Tensor:  # (B, 32, 16, 16) -> (B, K)
        return self.linear(self.pool(self.layer3(h)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.suffix(self.prefix(x))
