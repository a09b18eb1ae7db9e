"""LoRA adapters through peft, with a frozen-BatchNorm policy.

BatchNorm policy: the student always runs in eval mode, so running statistics never change and
features cannot drift through them; BN affine weights are frozen by peft like every base weight.
The adapter therefore fully describes the change: saving it alone (safetensors) and loading it
onto the same base reproduces the unlearned model exactly (tests/behaviour/test_lora_rfa.py).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from components.settings import LoraSettings


def attach_lora(model: nn.Module, cfg: LoraSettings) -> nn.Module:
    """Wrap `model` (modified in place) with LoRA branches on layers matching cfg.target_modules."""
    from peft import LoraConfig, get_peft_model  # lazy: peft pulls in transformers (~5 s)

    config = LoraConfig(
        r=cfg.rank,
        lora_alpha=cfg.alpha,
        target_modules=cfg.target_modules,
        lora_dropout=0.0,
        bias="none",
    )
    peft_model = get_peft_model(model, config)
    peft_model.eval()
    return peft_model


def trainable_fraction(model: nn.Module) -> float:
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return trainable / max(1, total)


def adapter_state(peft_model: nn.Module) -> dict[str, torch.Tensor]:
    from peft import get_peft_model_state_dict

    return {
        k: v.detach().cpu().contiguous() for k, v in get_peft_model_state_dict(peft_model).items()
    }


def apply_adapter(base: nn.Module, cfg: LoraSettings, state: dict[str, torch.Tensor]) -> nn.Module:
    """Load a saved adapter onto a fresh copy of the base and merge it: the served model."""
    from peft import set_peft_model_state_dict

    peft_model = attach_lora(base, cfg)
    set_peft_model_state_dict(peft_model, state)
    return peft_model.merge_and_unload().eval()


def frozen_split(student: nn.Module) -> tuple[Callable, Callable] | None:
    """(prefix, suffix) of a LoRA-wrapped model whose first stages carry no adapter, else None.

    A model opts in with `prefix(x)`, `suffix(h)` and `PREFIX_MODULES` (ResNetCifar does: on
    CPU its stem, layer1 and layer2 are 83 % of a forward pass, measured at batch 128). When an
    adapter sits inside the prefix (a user's target regex reached layer2), the prefix is not
    frozen and there is nothing to cache.
    """
    base = student.get_base_model() if hasattr(student, "get_base_model") else student
    names = getattr(base, "PREFIX_MODULES", None)
    if names is None or not hasattr(base, "prefix") or not hasattr(base, "suffix"):
        return None
    if any("lora_" in n for m in names for n, _ in getattr(base, m).named_parameters()):
        return None
    return base.prefix, base.suffix
