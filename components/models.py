"""Model registry. A model is rebuilt from a JSON-able spec plus a safetensors state dict, so a
registered version never needs pickle to load (`weights_only` in spirit)."""

from __future__ import annotations

import importlib
from collections import OrderedDict
from collections.abc import Callable

import numpy as np
import torch
from safetensors.torch import load as st_load
from safetensors.torch import save as st_save
from torch import nn

from components.canonical import sha256_hex
from components.layers import ModelError, Normalise  # noqa: F401 (ModelError is re-exported)
from components.resnet_cifar import DEPTHS, ResNetCifar
from components.settings import ModelSettings


def _block(cin: int, cout: int, pool: bool) -> nn.Sequential:
    layers: OrderedDict[str, nn.Module] = OrderedDict(
        conv=nn.Conv2d(cin, cout, 3, padding=1, bias=False), bn=nn.BatchNorm2d(cout), act=nn.ReLU()
    )
    if pool:
        layers["pool"] = nn.MaxPool2d(2)
    return nn.Sequential(layers)


class SmallCNN(nn.Module):
    """Three conv blocks (width, 2w, 4w channels), global average pool, linear head.

    Feature taps: `block1`, `block2`, `block3` (B, C, H, W) and `pool` (B, 4w) penultimate.
    """

    def __init__(
        self, in_channels: int, num_classes: int, width: int, mean: list[float], std: list[float]
    ) -> None:
        super().__init__()
        self.norm = Normalise(mean, std)
        self.block1 = _block(in_channels, width, pool=False)
        self.block2 = _block(width, 2 * width, pool=True)
        self.block3 = _block(2 * width, 4 * width, pool=False)
        self.pool = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.head = nn.Linear(4 * width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: (B, C, H, W) in [0, 1] -> (B, K)
        return self.head(self.pool(self.block3(self.block2(self.block1(self.norm(x))))))


def _resnet(depth_name: str) -> Callable[[dict], nn.Module]:
    def build(spec: dict) -> nn.Module:
        return ResNetCifar(DEPTHS[depth_name], spec["num_classes"], spec["mean"], spec["std"])

    return build


class Normalised(nn.Module):
    """A torchvision network behind the input normalisation ([0, 1] input like every model here)."""

    def __init__(self, net: nn.Module, mean: list[float], std: list[float]) -> None:
        super().__init__()
        self.norm = Normalise(mean, std)
        self.net = net

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.norm(x))


def _resnet18(spec: dict) -> nn.Module:
    """torchvision ResNet-18 (random init; no download), for users with a GPU and larger images."""
    from torchvision.models import resnet18

    net = resnet18(num_classes=spec["num_classes"])
    if spec["in_channels"] != 3:
        net.conv1 = nn.Conv2d(spec["in_channels"], 64, 7, 2, 3, bias=False)
    return Normalised(net, spec["mean"], spec["std"])


def _vit(spec: dict) -> nn.Module:
    """A small torchvision VisionTransformer (patch 4; width from spec) for GPU users. LoRA goes on
    the attention blocks (peft adapts nn.MultiheadAttention) and the head."""
    from torchvision.models import VisionTransformer

    hidden = 8 * spec["width"]
    net = VisionTransformer(
        image_size=spec["image_size"],
        patch_size=4,
        num_layers=6,
        num_heads=4,
        hidden_dim=hidden,
        mlp_dim=2 * hidden,
        num_classes=spec["num_classes"],
    )
    if spec["in_channels"] != 3:
        net.conv_proj = nn.Conv2d(spec["in_channels"], hidden, 4, 4)
    return Normalised(net, spec["mean"], spec["std"])


def load_builder(path: str) -> Callable[..., nn.Module]:
    """`package.module:function` -> the function (a user's architecture)."""
    module_name, _, attr = path.partition(":")
    try:
        module = importlib.import_module(module_name)
    except Exception as err:  # ImportError, or any error raised while the module runs
        raise ModelError(
            f"model.builder {path}: cannot import {module_name} ({type(err).__name__}: {err})"
        ) from None
    fn = getattr(module, attr, None)
    if not callable(fn):
        raise ModelError(f"model.builder {path}: {module_name} has no callable {attr!r}")
    return fn


def build_from_builder(path: str, kwargs: dict) -> nn.Module:
    try:
        net = load_builder(path)(**kwargs)
    except ModelError:
        raise
    except Exception as err:
        raise ModelError(
            f"model.builder {path}({kwargs}) failed: {type(err).__name__}: {err}"
        ) from None
    if not isinstance(net, nn.Module):
        raise ModelError(
            f"model.builder {path} returned {type(net).__name__}, not a torch nn.Module"
        )
    return net


ARCHS: dict[str, Callable[[dict], nn.Module]] = {
    "small_cnn": lambda spec: SmallCNN(
        spec["in_channels"], spec["num_classes"], spec["width"], spec["mean"], spec["std"]
    ),
    "resnet20": _resnet("resnet20"),
    "resnet32": _resnet("resnet32"),
    "resnet18": _resnet18,
    "vit": _vit,
    # A user's own architecture (model.builder); it takes [0, 1] images and normalises itself.
    "builder": lambda spec: build_from_builder(spec["builder"], spec.get("builder_kwargs", {})),
}


def make_spec(arch: str, x_train: np.ndarray, num_classes: int, width: int) -> dict:
    """Architecture spec with per-channel input statistics of the training images (uint8 NCHW)."""
    if arch not in ARCHS:
        raise ModelError(f"unknown model.arch {arch!r}; choose one of {sorted(ARCHS)}")
    xf = x_train.astype(np.float64) / 255.0
    mean = xf.mean(axis=(0, 2, 3)).tolist()
    std = [max(s, 1e-3) for s in xf.std(axis=(0, 2, 3)).tolist()]
    return {
        "arch": arch,
        "in_channels": int(x_train.shape[1]),
        "num_classes": int(num_classes),
        "width": width,
        "image_size": int(x_train.shape[2]),
        "mean": mean,
        "std": std,
    }


def spec_from_settings(cfg: ModelSettings, x_train: np.ndarray, num_classes: int) -> dict:
    """make_spec with what params.yaml's `model` section adds: fixed input statistics (a
    pre-trained checkpoint's) and a user's builder."""
    if cfg.arch == "builder":
        spec = {
            "arch": "builder",
            "builder": cfg.builder,
            "builder_kwargs": dict(cfg.builder_kwargs),
            "in_channels": int(x_train.shape[1]),
            "num_classes": int(num_classes),
            "image_size": int(x_train.shape[2]),
        }
    else:
        spec = make_spec(cfg.arch, x_train, num_classes, cfg.width)
    if cfg.mean is not None:
        if len(cfg.mean) != x_train.shape[1] or len(cfg.std) != x_train.shape[1]:
            raise ModelError(
                f"model.mean / model.std need one value per image channel ({x_train.shape[1]})"
            )
        spec.update(mean=list(cfg.mean), std=list(cfg.std))
    return spec


def build_model(spec: dict) -> nn.Module:
    try:
        return ARCHS[spec["arch"]](spec)
    except KeyError as err:
        raise ModelError(
            f"model spec lacks or misnames {err}; known archs: {sorted(ARCHS)}"
        ) from None


def state_bytes(model: nn.Module) -> bytes:
    """Deterministic safetensors bytes of the state dict (sorted keys, contiguous CPU tensors)."""
    sd = {k: v.detach().to("cpu").contiguous() for k, v in model.state_dict().items()}
    return st_save(sd)


def model_digest(model: nn.Module) -> str:
    """sha256 of `state_bytes`: the identity of the weights, independent of file layout."""
    return sha256_hex(state_bytes(model))


def load_model(spec: dict, weights: bytes) -> nn.Module:
    """Rebuild a model from spec + safetensors bytes. Raises ModelError on a corrupt checkpoint."""
    model = build_model(spec)
    try:
        sd = st_load(weights)
    except (
        Exception
    ) as err:  # safetensors raises its own SafetensorError on truncated/garbled bytes
        raise ModelError(f"corrupt checkpoint: {err}") from None
    try:
        missing, unexpected = model.load_state_dict(sd, strict=True)
    except RuntimeError as err:  # same names, other shapes: e.g. weights of a narrower model
        first = next(
            (ln.strip() for ln in str(err).splitlines() if "size mismatch" in ln),
            str(err).splitlines()[0],
        )
        raise ModelError(f"checkpoint does not fit spec {spec['arch']}: {first}") from None
    if missing or unexpected:
        raise ModelError(
            f"checkpoint does not fit spec {spec['arch']}: missing {missing[:3]}, unexpected "
            f"{unexpected[:3]}"
        )
    return model.eval()


def to_input(x: np.ndarray) -> torch.Tensor:
    """uint8 NCHW -> float32 in [0, 1]."""
    return torch.from_numpy(np.ascontiguousarray(x)).float().div_(255.0)
