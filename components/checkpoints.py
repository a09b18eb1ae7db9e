"""Bringing an existing model in: read a checkpoint without unpickling code, fit it to an
architecture (a user's own builder lives in components/models.py), and check that LoRA targets
and feature taps name real layers. Every failure is a ModelError saying what to change.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch
from torch import nn

from components.models import ModelError
from components.resnet_cifar import DEPTHS, ResNetCifar

# Wrappers that training scripts put around a state dict; DataParallel adds the `module.` prefix.
STATE_KEYS = ("state_dict", "model_state_dict", "model")
# Layers peft can put a LoRA branch on.
LORA_LAYERS = (nn.Conv2d, nn.Linear, nn.MultiheadAttention, nn.Conv1d, nn.Embedding)


def read_checkpoint(path: str | Path) -> dict[str, torch.Tensor]:
    """A state dict from a safetensors file, or a torch file loaded with `weights_only=True`
    (tensors and plain containers only: a pickle that needs code is refused, never run)."""
    p = Path(path)
    if not p.is_file():
        raise ModelError(f"checkpoint {p}: no such file")
    try:
        if p.suffix == ".safetensors":
            from safetensors.torch import load_file

            raw: object = load_file(str(p))
        else:
            raw = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as err:  # UnpicklingError, SafetensorError, RuntimeError (truncated zip), ...
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise ModelError(
            f"checkpoint {p} cannot be read as weights only ({type(err).__name__}: {first[:200]}); "
            "save a state dict (torch.save(model.state_dict())) or safetensors"
        ) from None
    for key in STATE_KEYS:
        if isinstance(raw, dict) and isinstance(raw.get(key), dict):
            raw = raw[key]
            break
    if (
        not isinstance(raw, dict)
        or not raw
        or not all(isinstance(v, torch.Tensor) for v in raw.values())
    ):
        raise ModelError(
            f"checkpoint {p} holds no state dict (a mapping of parameter names to tensors)"
        )
    return {str(k).removeprefix("module."): v for k, v in raw.items()}


def fit_state_dict(model: nn.Module, state: dict[str, torch.Tensor], what: str) -> nn.Module:
    """Load `state` into `model` strictly. Only our own input-normalisation buffers (`norm.*`,
    which no outside checkpoint carries) and BatchNorm's step counters (`num_batches_tracked`,
    absent from checkpoints of older PyTorch; eval-mode BN never reads them) may be missing."""
    own = model.state_dict()
    optional = [k for k in own if k.startswith("norm.") or k.endswith("num_batches_tracked")]
    missing = [k for k in own if k not in state and k not in optional]
    unexpected = [k for k in state if k not in own]
    if missing or unexpected:
        raise ModelError(
            f"{what} does not fit the architecture: missing "
            f"{missing[:3]}{'...' if len(missing) > 3 else ''}, "
            f"unexpected {unexpected[:3]}{'...' if len(unexpected) > 3 else ''}"
        )
    bad = next((k for k, v in state.items() if tuple(v.shape) != tuple(own[k].shape)), None)
    if bad is not None:
        raise ModelError(
            f"{what} does not fit the architecture: {bad} has shape {tuple(state[bad].shape)}, "
            f"the model expects {tuple(own[bad].shape)}"
        )
    model.load_state_dict({**{k: own[k] for k in optional}, **state}, strict=True)
    return model.eval()


def check_layers(model: nn.Module, target_modules: str, taps: tuple[str, ...]) -> list[str]:
    """Validate LoRA targets (peft regex, full match) and feature taps against the model's real
    layer names; returns the adapted layers. ModelError names what matches nothing."""
    names = dict(model.named_modules())
    listed = ", ".join(n for n in list(names)[1:40] if n)
    missing = [t for t in taps if t not in names]
    if missing:
        raise ModelError(f"rfa.taps {missing} name no layer of the model (its layers: {listed}...)")
    try:
        pattern = re.compile(target_modules)
    except re.error as err:
        raise ModelError(
            f"lora.target_modules {target_modules!r} is not a regular expression ({err})"
        ) from None
    targets = [
        n for n, m in names.items() if n and pattern.fullmatch(n) and isinstance(m, LORA_LAYERS)
    ]
    if not targets:
        raise ModelError(
            f"lora.target_modules {target_modules!r} matches no Conv/Linear/attention layer of the "
            "model "
            f"(its layers: {listed}...)"
        )
    return targets


def load_akamaster(path: str | Path, arch: str) -> nn.Module:
    """A pre-trained akamaster CIFAR ResNet (../shared/models: a dict with 'state_dict', keys
    prefixed 'module.'), read like any imported checkpoint."""
    return fit_state_dict(ResNetCifar(DEPTHS[arch]), read_checkpoint(path), f"checkpoint {path}")
