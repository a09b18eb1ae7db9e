"""The adversarial forget probe (components/unlearning/adversary.py) and its wiring into RFA."""

import pytest
import torch

from components.forget import extract_forget_set
from components.models import to_input
from components.settings import LoraSettings, RfaSettings, SettingsError, parse_settings
from components.unlearning.adversary import FeatureBank, ForgetProbe, fit_probe, recognition_penalty
from components.unlearning.rfa import rfa
from components.unlearning.types import UnlearnTask


def _two_blobs(n=200, dim=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(2 * n, dim, generator=g)
    y = torch.cat([torch.zeros(n, dtype=torch.long), torch.ones(n, dtype=torch.long)])
    x[y == 1, 0] += 6.0  # class 1 sits far along the first axis: linearly separable
    return x, y


def test_fit_probe_learns_a_separable_class_and_the_penalty_tracks_its_confidence():
    x, y = _two_blobs()
    probe = ForgetProbe(x, num_classes=2)
    opt = torch.optim.Adam(probe.parameters(), lr=0.05)
    first = fit_probe(probe, opt, x, y, steps=1)
    last = fit_probe(probe, opt, x, y, steps=100)
    assert last < first / 4
    recognised = recognition_penalty(probe, x[y == 1], (1,))
    unrecognised = recognition_penalty(probe, x[y == 0], (1,))
    assert recognised > 1.0  # confident recognition costs most
    assert 0 <= unrecognised < 0.1


def test_penalty_gradient_reaches_the_features_never_the_probe():
    x, y = _two_blobs()
    probe = ForgetProbe(x, num_classes=2)
    opt = torch.optim.Adam(probe.parameters(), lr=0.05)
    fit_probe(probe, opt, x, y, steps=50)
    probe.zero_grad(set_to_none=True)
    feats = x[y == 1].clone().requires_grad_(True)
    recognition_penalty(probe, feats, (1,)).backward()
    assert feats.grad is not None and feats.grad.abs().sum() > 0
    assert all(p.grad is None for p in probe.parameters())
    # Moving the features against their gradient lowers the penalty: the adapter's direction is
    # right.
    with torch.no_grad():
        moved = feats - 5.0 * feats.grad / feats.grad.norm(dim=1, keepdim=True)
    assert recognition_penalty(probe, moved, (1,)) < recognition_penalty(
        probe, feats.detach(), (1,)
    )


def test_feature_bank_keeps_the_newest_pairs():
    bank = FeatureBank(torch.zeros(5, 2), torch.zeros(5, dtype=torch.long), size=4)
    assert len(bank.labels) == 4
    bank.add(torch.ones(3, 2), torch.ones(3, dtype=torch.long))
    assert bank.labels.tolist() == [0, 1, 1, 1] and bank.feats.shape == (4, 2)


def test_sample_unlearning_refuses_the_probe_naming_the_key():
    with pytest.raises(SettingsError, match="sample_unlearning.probe_weight"):
        parse_settings(
            {"rfa": {"sample_unlearning": {"target": "margin_quantile", "probe_weight": 1.0}}}
        )


def test_rfa_with_the_probe_trains_it_in_the_loop_and_still_forgets(base_model, digits):
    c = 4
    fs = extract_forget_set(digits.train, set(digits.train.ids[digits.train.y == c].tolist()))
    task = UnlearnTask("class", fs.forget, fs.retain, digits.heldout, (c,))
    cfg = RfaSettings(
        min_steps=40,
        max_steps=40,
        class_unlearning={
            "target": "masked_nearest_class",
            "forget_epochs": 1,
            "probe_weight": 1.0,
        },
    )
    result = rfa(base_model, task, LoraSettings(), cfg)
    probe_recs = [h for h in result.history if "probe_penalty" in h]
    assert len(probe_recs) == 4 and all(
        h["probe_fit"] >= 0 and h["probe_penalty"] >= 0 for h in probe_recs
    )
    ft = digits.test.take(digits.test.y == c)
    with torch.no_grad():
        assert (result.model(to_input(ft.x)).argmax(1).numpy() == c).mean() <= 0.01
    # Off by default: the same run without the probe records no probe terms.
    plain = rfa(
        base_model,
        task,
        LoraSettings(),
        RfaSettings(
            min_steps=10,
            max_steps=10,
            class_unlearning={"target": "masked_nearest_class", "forget_epochs": 1},
        ),
    )
    assert not any("probe_penalty" in h for h in plain.history)
