"""The frozen-prefix cache RFA uses on models whose first stages carry no adapter."""

from __future__ import annotations

import copy

import numpy as np
import torch

from components.data import Split
from components.models import build_model, make_spec, to_input
from components.settings import LoraSettings, RfaSettings
from components.unlearning.lora import attach_lora, frozen_split
from components.unlearning.rfa import rfa
from components.unlearning.types import UnlearnTask
from tests.conftest import ARCH_CASES


def _resnet(n=6):
    x = np.random.default_rng(0).integers(0, 256, (n, 3, 32, 32), dtype=np.uint8)
    torch.manual_seed(0)
    return build_model(make_spec("resnet20", x, 10, 32)).eval(), x


def _perturbed_student(model, targets):
    student = attach_lora(
        copy.deepcopy(model), LoraSettings(rank=3, alpha=6, target_modules=targets)
    )
    with torch.no_grad():
        for p in [p for n, p in student.named_parameters() if "lora_B" in n]:
            p.normal_(0, 0.05)
    return student


def test_prefix_then_suffix_is_the_adapted_forward_exactly():
    model, x = _resnet()
    student = _perturbed_student(model, ARCH_CASES["resnet20"].lora_targets)
    prefix, suffix = frozen_split(student)
    xin = to_input(x)
    with torch.no_grad():
        assert torch.equal(suffix(prefix(xin)), student(xin))
        assert not torch.allclose(
            student(xin), model(xin), atol=1e-4
        )  # the suffix carries the adapter


def test_no_split_when_an_adapter_sits_in_the_prefix_or_the_model_has_none():
    model, _ = _resnet()
    assert frozen_split(_perturbed_student(model, r"layer[23]\.\d+\.conv[12]|linear")) is None
    small = build_model(make_spec("small_cnn", np.zeros((2, 1, 8, 8), np.uint8), 10, 8))
    assert frozen_split(attach_lora(small, LoraSettings())) is None


def test_rfa_with_the_cached_prefix_forgets_a_class_on_a_resnet():
    # A tiny three-class problem the random ResNet-20 first learns from its features alone.
    rng = np.random.default_rng(1)
    y = np.repeat([0, 1, 2], 64)
    x = rng.integers(0, 60, (len(y), 3, 32, 32)).astype(np.uint8)
    x[y == 1, 0] += 150
    x[y == 2, 2] += 150
    model, _ = _resnet()
    opt = torch.optim.Adam(model.linear.parameters(), lr=0.05)
    xin, yt = to_input(x), torch.from_numpy(y)
    for _ in range(60):  # fit the head only: the prefix stays what it was
        loss = torch.nn.functional.cross_entropy(model(xin), yt)
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval()
    ids = np.array([f"s{i}" for i in range(len(y))])
    split = Split(x, y.astype(np.int64), ids)
    keep = y != 1
    task = UnlearnTask("class", split.take(~keep), split.take(keep), split.take(keep), (1,))
    lora = LoraSettings(rank=3, alpha=6, target_modules=ARCH_CASES["resnet20"].lora_targets)
    cfg = RfaSettings(
        taps=ARCH_CASES["resnet20"].taps,
        retain_pool=64,
        retain_batch=32,
        min_steps=40,
        max_steps=40,
        class_unlearning={"target": "masked_nearest_class", "forget_epochs": 1, "lr": 0.01},
    )
    result = rfa(model, task, lora, cfg)
    with torch.no_grad():
        before = (model(to_input(x[y == 1])).argmax(1) == 1).float().mean().item()
        after = (result.model(to_input(x[y == 1])).argmax(1) == 1).float().mean().item()
    assert before > 0.9 and after <= 0.05
