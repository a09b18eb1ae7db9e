"""The gates' splits: RFA's non-member reference (the heldout split) is never what a gate reads,
and the cross-fitted Dt baseline that replaced it still tells members from non-members."""

import numpy as np
import torch

from components.data import Split
from components.forget import extract_forget_set, forget_manifest, manifest_sha256
from components.metrics import mia_unseen, predict
from components.settings import EvaluationSettings, GateSettings
from components.unlearning.registry import get_method
from components.unlearning.types import MethodConfig, UnlearnTask
from pipelines.batch import Extraction, Pinned, assess

CPU = torch.device("cpu")


def _sample_forget(digits, n=60, seed=0):
    rng = np.random.default_rng(seed)
    return extract_forget_set(
        digits.train, set(rng.choice(digits.train.ids, size=n, replace=False).tolist())
    )


def _extraction(fs, test, heldout):
    manifest = forget_manifest(fs.forget)
    return Extraction(fs, manifest, manifest_sha256(manifest), (), test, heldout)


def test_the_gates_never_read_the_reference_split(base_model, digits):
    """Sample RFA builds its target from heldout; the assessment of the same result with heldout
    replaced by noise (other pixels, other labels) must give the same metrics and verdicts. The
    earlier sample MIA gate compared Df with heldout and fails this."""
    fs = _sample_forget(digits)
    result = get_method("rfa")(
        base_model, UnlearnTask("sample", fs.forget, fs.retain, digits.heldout), MethodConfig()
    )
    rng = np.random.default_rng(1)
    h = digits.heldout
    noise = Split(
        rng.integers(0, 256, size=h.x.shape, dtype=np.uint8),
        rng.permutation(h.y),
        h.ids,
    )
    pinned = Pinned(None, base_model, {"num_classes": digits.num_classes}, None)
    runs = [
        assess(
            pinned,
            _extraction(fs, digits.test, ref),
            result,
            "sample",
            EvaluationSettings(),
            GateSettings(),
            "cpu",
        )
        for ref in (h, noise)
    ]
    real, noisy = runs
    assert real.unlearned == noisy.unlearned and real.original == noisy.original
    assert real.gates.to_dict() == noisy.gates.to_dict()
    gate = next(g for g in real.gates.results if g.name == "mia_efficacy_gap")
    assert "unseen Dt" in gate.reference


def test_the_cross_fitted_baseline_tells_members_from_non_members(base_model, digits):
    """Non-members in the place of Df (the heldout images, which the model never trained on) score
    like the unseen Dt images; the training images themselves are called members more often."""
    retain = predict(base_model, digits.train.take(np.arange(0, len(digits.train), 2)), CPU)
    test = predict(base_model, digits.test, CPU)
    members = predict(base_model, digits.train.take(np.arange(1, len(digits.train), 2)), CPU)
    nonmembers = predict(base_model, digits.heldout, CPU)
    for feature in ("confidence", "entropy", "modified_entropy"):
        out = mia_unseen(retain, test, nonmembers, feature=feature)
        inside = mia_unseen(retain, test, members, feature=feature)
        assert abs(out["forget"] - out["unseen"]) < 10.0, (feature, out)
        assert out["unseen"] == inside["unseen"]  # the baseline does not depend on Df
        assert inside["forget"] < out["forget"], (feature, inside, out)
