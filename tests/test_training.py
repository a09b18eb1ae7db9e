"""The training engine behind the base model and the Retrain oracle."""

import torch

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
        crops = [padded[:, dy:dy + 8, dx:dx + 8] for dy in range(5) for dx in range(5)]
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
        train_classifier(model, digits.train, TrainSettings(epochs=4, lr=lr, optimizer=name),
                         torch.device("cpu"))
        with torch.no_grad():
            from components.models import to_input
            acc = (model(to_input(digits.test.x)).argmax(1).numpy() == digits.test.y).mean()
        assert acc > 0.5, (name, acc)
