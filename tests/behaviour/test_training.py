"""The training engine behind the base model and the Retrain oracle."""

import pytest
import torch
from pydantic import ValidationError

from components.settings import TrainSettings
from components.training import OPTIMIZERS, augment_batch, train_classifier


def test_augment_batch_shifts_and_flips_each_image_within_the_padding():
    gen = torch.Generator().manual_seed(0)
    x = torch.rand(64, 3, 8, 8)
    out = augment_batch(x, gen, pad=2)
    assert out.shape == x.shape
    # Every output is a shifted (zero-filled) and maybe mirrored copy of its own input.
    found = 0
    for i in range(len(x)):
        padded = torch.nn.functional.pad(x[i], (2, 2, 2, 2))
        crops = [padded[:, dy : dy + 8, dx : dx + 8] for dy in range(5) for dx in range(5)]
        crops += [c.flip(2) for c in crops]
        found += any(torch.equal(out[i], c) for c in crops)
    assert found == len(x)
    assert not torch.equal(out, x)  # 64 images: some shift or flip happened


def test_augment_batch_is_reproducible_from_the_generator():
    x = torch.rand(16, 1, 6, 6)
    a = augment_batch(x, torch.Generator().manual_seed(3))
    b = augment_batch(x, torch.Generator().manual_seed(3))
    assert torch.equal(a, b)


def test_every_registered_optimizer_trains_a_model_that_beats_chance(digits):
    from components.models import build_model, make_spec

    assert set(OPTIMIZERS) == set(TrainSettings.model_fields["optimizer"].annotation.__args__)
    spec = make_spec("small_cnn", digits.train.x, digits.num_classes, 8)
    for name, lr in (("adam", 3e-3), ("sgd", 0.05)):
        torch.manual_seed(0)
        model = build_model(spec)
        train_classifier(
            model, digits.train, TrainSettings(epochs=4, lr=lr, optimizer=name), torch.device("cpu")
        )
        with torch.no_grad():
            from components.models import to_input

            acc = (model(to_input(digits.test.x)).argmax(1).numpy() == digits.test.y).mean()
        assert acc > 0.5, (name, acc)


@pytest.mark.usefixtures("bf16_anywhere")
def test_bf16_training_beats_chance_and_hands_back_an_fp32_model_in_the_usual_layout(digits):
    """bf16 autocast + channels_last speeds the Retrain oracle up; the trained model must still be a
    plain fp32, contiguous model that saves, loads and evaluates like any other."""
    from components.models import build_model, make_spec, to_input

    spec = make_spec("small_cnn", digits.train.x, digits.num_classes, 8)
    trained = {}
    for precision in ("fp32", "bf16"):
        torch.manual_seed(0)
        trained[precision] = build_model(spec)
        train_classifier(
            trained[precision],
            digits.train,
            TrainSettings(epochs=4, lr=3e-3, precision=precision),
            torch.device("cpu"),
        )
    model = trained["bf16"]
    # Same seed, same batches: only the arithmetic differs, so bf16 really ran.
    assert not torch.equal(model.head.weight, trained["fp32"].head.weight)
    assert all(p.dtype == torch.float32 for p in model.parameters())
    assert all(p.is_contiguous() for p in model.parameters())
    with torch.no_grad():
        acc = (model(to_input(digits.test.x)).argmax(1).numpy() == digits.test.y).mean()
    assert acc > 0.5, acc


def test_bf16_on_a_cpu_without_bf16_units_fails_before_training_with_the_fix(digits, monkeypatch):
    """Emulated bf16 is slower than fp32: a CPU without the units gets a one-line refusal, and the
    model is left untouched."""
    from components import runtime
    from components.models import build_model, make_spec

    monkeypatch.setattr(runtime, "bf16_cpu_supported", lambda: False)  # whatever this CPU has
    model = build_model(make_spec("small_cnn", digits.train.x, digits.num_classes, 8))
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with pytest.raises(RuntimeError, match="AVX512-BF16 or AMX.*set fp32 .train.precision"):
        train_classifier(
            model, digits.train, TrainSettings(epochs=1, precision="bf16"), torch.device("cpu")
        )
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())


def test_unknown_precision_is_refused_by_the_settings():
    with pytest.raises(ValidationError, match="precision"):
        TrainSettings(precision="fp16")


class _Stop(Exception):
    """Raised from the progress callback: a run stopped right after an epoch."""


def _stop(*_: object) -> None:
    raise _Stop


@pytest.mark.parametrize(
    ("optimizer", "lr", "precision"),
    [("adam", 3e-3, "fp32"),
     ("sgd", 0.05, "bf16")],
)  # fmt: skip
@pytest.mark.usefixtures("bf16_anywhere")
def test_a_training_stopped_after_an_epoch_resumes_to_the_weights_of_one_never_stopped(
    digits, tmp_path, optimizer, lr, precision
):
    """What a 60-epoch oracle killed at epoch 40 relies on: the saved epoch (weights, optimiser,
    one-cycle schedule, shuffling and augmentation draws) continues bit for bit."""
    from benchmarks.cache import EpochFile
    from components.models import build_model, make_spec

    spec = make_spec("small_cnn", digits.train.x, digits.num_classes, 8)
    cfg = TrainSettings(epochs=3, lr=lr, optimizer=optimizer, precision=precision, augment=True)
    cpu = torch.device("cpu")
    torch.manual_seed(0)
    whole = build_model(spec)
    never_stopped = train_classifier(whole, digits.train, cfg, cpu)

    epochs = EpochFile(tmp_path / "oracle.epochs")
    torch.manual_seed(0)
    with pytest.raises(_Stop):
        train_classifier(build_model(spec), digits.train, cfg, cpu, _stop, checkpoints=epochs)
    assert epochs.load()["epoch"] == 1  # saved before the run stopped

    torch.manual_seed(1)  # other initial weights: the resumed run must take the saved ones
    resumed = build_model(spec)
    info = train_classifier(resumed, digits.train, cfg, cpu, checkpoints=epochs)
    assert info["resumed_from_epoch"] == 1 and info["steps"] == never_stopped["steps"]
    assert info["earlier_seconds"] > 0 and info["seconds"] > info["earlier_seconds"]
    a, b = whole.state_dict(), resumed.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    assert epochs.load()["epoch"] == 3
