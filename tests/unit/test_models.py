"""Every registered architecture: builds from a spec, takes LoRA on its declared targets within the
5 % budget, exposes its taps, and merges back to a plain module with the adapted outputs."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch

from components.models import ARCHS, build_model, make_spec, to_input
from components.settings import LoraSettings
from components.unlearning.lora import attach_lora, trainable_fraction
from components.unlearning.taps import feature_taps, pooled
from tests.conftest import ARCH_CASES

# The rank each is run at (params.yaml / benchmarks/params): ResNet-20/32 need rank 3 for ≤ 5 %.
RANKS = {"small_cnn": 4, "resnet20": 3, "resnet32": 3, "resnet18": 4, "vit": 4}


# A user's `builder` architecture brings its own targets and taps in params (checked against
# its layer names by components/checkpoints.check_layers, tests/integration/test_import.py);
# built-ins have a case each (tests/conftest.ARCH_CASES).
BUILT_IN = sorted(set(ARCHS) - {"builder"})


def test_every_architecture_has_a_test_case():
    assert set(BUILT_IN) == set(ARCH_CASES) == set(RANKS)


@pytest.mark.parametrize("arch", BUILT_IN)
def test_lora_on_declared_targets_is_small_tapped_and_merges_exactly(arch):
    x = np.random.default_rng(0).integers(0, 256, (6, 3, 32, 32), dtype=np.uint8)
    torch.manual_seed(0)
    model = build_model(make_spec(arch, x, 10, 32)).eval()
    profile = ARCH_CASES[arch]
    student = attach_lora(
        copy.deepcopy(model),
        LoraSettings(rank=RANKS[arch], alpha=8, target_modules=profile.lora_targets),
    )
    assert 0 < trainable_fraction(student) <= 0.05
    with torch.no_grad():  # B starts at zero: a fresh adapter is the identity
        for p in [p for n, p in student.named_parameters() if "lora_B" in n]:
            p.normal_(0, 0.05)
    xin = to_input(x)
    with torch.no_grad(), feature_taps(student, profile.taps + (profile.penultimate,)) as store:
        out = student(xin)
        feats = {k: pooled(v) for k, v in store.items()}
    assert out.shape == (6, 10) and all(f.shape[0] == 6 and f.dim() == 2 for f in feats.values())
    with torch.no_grad():
        assert not torch.allclose(out, model(xin), atol=1e-4)  # the adapter changes the outputs
        merged = student.merge_and_unload().eval()
        assert torch.allclose(merged(xin), out, atol=1e-4)
        assert not any("lora" in n for n, _ in merged.named_parameters())
