"""The baselines follow their reference recipes: the passes each makes over Df and Dr, SalUn's
masked weights held where they were, and at the references' learning rates none collapses."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from components.data import Split
from components.forget import extract_forget_set
from components.models import to_input
from components.settings import BaselineSettings, Settings, TrainSettings
from components.unlearning.baselines import BASELINES, saliency_mask
from components.unlearning.sgd_loop import Batches
from components.unlearning.types import UnlearnTask

# The committed recipes (bench.recipes) at each reference's own lr.
RECIPES = Settings().bench.recipes
REFERENCE_LR = {"ft": 0.01, "neggrad": 0.01, "rl": 0.013, "salun": 0.013, "scrub": 0.0005}


@pytest.fixture(scope="module")
def task(digits):
    rng = np.random.default_rng(0)
    ids = rng.choice(digits.train.ids, size=len(digits.train) // 10, replace=False)
    fs = extract_forget_set(digits.train, set(ids.tolist()), 0.5)
    return UnlearnTask("sample", fs.forget, fs.retain, digits.heldout)


def _cfg(name: str) -> BaselineSettings:
    return BaselineSettings(**RECIPES[name], lr=REFERENCE_LR[name], device="cpu")


def _acc(model, split) -> float:
    with torch.no_grad():
        return 100 * float((model(to_input(split.x)).argmax(1).numpy() == split.y).mean())


def _expected_steps(name: str, cfg: BaselineSettings, nf: int, nr: int) -> int:
    retain = cfg.epochs * math.ceil(nr / cfg.batch_size)
    if name in ("ft", "neggrad"):  # passes over Dr (NegGrad+ draws a Df batch per Dr batch)
        return retain
    if name in ("rl", "salun"):  # each epoch: a pass over Df, then one over Dr
        return retain + cfg.epochs * math.ceil(nf / cfg.batch_size)
    max_epochs = min(cfg.epochs, cfg.scrub_max_steps)  # SCRUB: 1-based epoch <= msteps
    return retain + max_epochs * math.ceil(nf / cfg.forget_batch)


@pytest.mark.parametrize("name", sorted(REFERENCE_LR))
def test_each_recipe_makes_its_references_passes_and_keeps_dr(name, base_model, task):
    cfg = _cfg(name)
    seen: list[tuple[int, int]] = []
    res = BASELINES[name](base_model, task, cfg, None, lambda k, n, _: seen.append((k, n)))
    assert res.steps == _expected_steps(name, cfg, len(task.forget), len(task.retain))
    # Progress every 10 steps and at the last, against the total known before the first step.
    assert seen[-1] == (res.steps, res.steps)
    assert [k for k, _ in seen[:-1]] == list(range(10, res.steps, 10))
    assert {n for _, n in seen} == {res.steps}
    # Not collapsed: the retained data's accuracy stays within 3 points of the original's (the
    # old paired RL / SCRUB loops lost 35-80 points on CIFAR-10).
    assert _acc(res.model, task.retain) >= _acc(base_model, task.retain) - 3.0


def test_salun_moves_only_the_salient_weights(base_model, task):
    cfg = _cfg("salun")
    mask = saliency_mask(base_model, task.forget, cfg.saliency_fraction, torch.device("cpu"))
    res = BASELINES["salun"](base_model, task, cfg)
    before, after = dict(base_model.named_parameters()), dict(res.model.named_parameters())
    moved = frozen = 0
    for n, m in mask.items():
        changed = after[n].detach() != before[n].detach()
        assert not changed[m == 0].any(), n  # held at its value, momentum and decay included
        moved, frozen = moved + int(changed[m == 1].sum()), frozen + int((m == 0).sum())
    assert moved > 0 and frozen > 0


@pytest.mark.usefixtures("bf16_anywhere")
@pytest.mark.parametrize("name", sorted(REFERENCE_LR))
def test_each_baseline_runs_under_bf16_and_hands_back_a_plain_fp32_model(name, base_model, task):
    """`precision: bf16` (a benchmark runs every method under RFA's precision) reaches each
    baseline's loop: same seed and draws as fp32, different arithmetic, and the model comes back
    fp32 in the usual layout, keeping Dr as well as the fp32 run of the same two epochs does."""
    cfg = _cfg(name).model_copy(update={"epochs": 2})
    runs = {p: BASELINES[name](base_model, task, cfg.model_copy(update={"precision": p}))
            for p in ("fp32", "bf16")}  # fmt: skip
    bf16, fp32 = runs["bf16"].model, runs["fp32"].model
    assert runs["bf16"].steps == runs["fp32"].steps
    pairs = zip(bf16.parameters(), fp32.parameters(), strict=True)
    assert any(not torch.equal(a, b) for a, b in pairs)
    assert all(p.dtype == torch.float32 and p.is_contiguous() for p in bf16.parameters())
    assert _acc(bf16, task.retain) >= _acc(fp32, task.retain) - 3.0  # as good, within noise


def test_auto_precision_on_the_cpu_is_fp32_bit_for_bit(base_model, task):
    """auto is the device's own policy: on the CPU plain fp32, the loop the tables ran."""
    cfg = _cfg("rl").model_copy(update={"epochs": 1})
    auto, fp32 = (BASELINES["rl"](base_model, task, cfg.model_copy(update={"precision": p}))
                  for p in ("auto", "fp32"))  # fmt: skip
    pairs = zip(auto.model.parameters(), fp32.model.parameters(), strict=True)
    assert all(torch.equal(a, b) for a, b in pairs)


def _shifts_and_flips(img: torch.Tensor, pad: int = 4) -> list[torch.Tensor]:
    """Every crop of `img` zero-padded by `pad`, each also flipped: what crop + flip may give."""
    h, w = img.shape[-2:]
    padded = torch.nn.functional.pad(img, (pad, pad, pad, pad))
    shifts = range(2 * pad + 1)
    crops = [padded[:, i : i + h, j : j + w] for i in shifts for j in shifts]
    return crops + [c.flip(-1) for c in crops]


def test_batches_are_augmented_exactly_when_asked():
    rng = np.random.default_rng(0)
    split = Split(rng.integers(0, 256, (40, 3, 32, 32), dtype=np.uint8), np.arange(40) % 10,
                  np.array([f"i{k}" for k in range(40)]))  # fmt: skip
    cpu = torch.device("cpu")
    plain = Batches(torch.Generator().manual_seed(0), cpu).once(split, 16)
    aug = Batches(torch.Generator().manual_seed(0), cpu, augment=True).once(split, 16)
    changed = 0
    for (xp, yp), (xa, ya) in zip(plain, aug, strict=True):
        assert torch.equal(yp, ya)  # same order of images: the shuffle draws first
        for p, a in zip(xp, xa, strict=True):
            assert any(torch.equal(a, c) for c in _shifts_and_flips(p))
            changed += not torch.equal(a, p)
    assert changed > 30  # 1 in 162 crop + flip draws is the identity


def test_a_baseline_augments_where_the_original_was_trained_with_it(base_model, task):
    # Same seed, one FT epoch: only the batches' crop + flip can tell the two runs apart.
    cfg = BaselineSettings(epochs=1, batch_size=256, lr=0.01, device="cpu")
    runs = [BASELINES["ft"](base_model, task, cfg, TrainSettings(augment=a)) for a in (False, True)]
    plain, augmented = (dict(r.model.state_dict()) for r in runs)
    again = BASELINES["ft"](base_model, task, cfg, TrainSettings(augment=False))
    assert all(torch.equal(v, again.model.state_dict()[k]) for k, v in plain.items())
    assert not all(torch.equal(v, augmented[k]) for k, v in plain.items())
