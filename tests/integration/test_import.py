"""Bringing your own model and data: `unlearn model import` from a checkpoint (built-in and a
user's own architecture) or an MLflow URI, and every bad input as one line that changes nothing."""

from __future__ import annotations

import hashlib
import socket
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from pipelines.cli import main
from pipelines.snapshot import read_state
from tests.conftest import SHARED, make_workspace

RESNET20 = SHARED / "models" / "resnet_cifar10_akamaster" / "resnet20-12fca82f.th"
CIFAR_TEST = SHARED / "datasets" / "cifar10" / "test.npz"


class TinyNet(nn.Module):
    """A user's own architecture, defined only here: its layer names are none of ours."""

    def __init__(self, num_classes: int, width: int) -> None:
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(1, width, 3, padding=1),
            nn.ReLU(),
            nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1),
            nn.ReLU(),
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
        )
        self.classifier = nn.Linear(2 * width, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def tiny_net(num_classes: int = 10, width: int = 8) -> nn.Module:
    """The builder params.yaml names as `tests.integration.test_import:tiny_net`."""
    return TinyNet(num_classes, width)


BUILDER = {
    "model": {
        "arch": "builder",
        "builder": "tests.integration.test_import:tiny_net",
        "builder_kwargs": {"num_classes": 10},
    },
    "lora": {"target_modules": r"features\.3|classifier"},
    "rfa": {"taps": ["features.1", "features.4"]},
}


def run(capsys, *args):
    code = main([str(a) for a in args])
    cap = capsys.readouterr()
    return code, cap.out, cap.err


def one_line_error(err: str, needle: str) -> None:
    lines = [ln for ln in err.strip().splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], err


def fresh(tmp: Path, overrides: dict | None = None):
    tmp.mkdir(parents=True, exist_ok=True)
    return make_workspace(tmp, overrides, train=False)


@pytest.fixture(scope="module")
def digits_checkpoint(base_model, tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("ckpt") / "digits-cnn.pt"
    torch.save(base_model.state_dict(), path)
    return path


def test_import_checkpoint_then_first_batch_runs_as_on_a_trained_base(
    tmp_path, digits_checkpoint, base_model, capsys, prefect_server
):
    from components.models import model_digest
    from pipelines.flow import deletion_batch
    from pipelines.intake import submit

    ws = fresh(tmp_path)
    code, out, err = run(
        capsys,
        "-w",
        ws.root,
        "model",
        "import",
        "--checkpoint",
        digits_checkpoint,
        "--trained-on",
        "train-split",
    )
    assert code == 0, err
    reg, name = ws.registry(), ws.settings.registry.model_name
    tags = reg.champion(name).tags
    assert (
        tags["origin"] == "imported"
        and tags["source.sha256"] == hashlib.sha256(digits_checkpoint.read_bytes()).hexdigest()
    )
    assert (
        tags["model_digest"] == model_digest(base_model)
        and tags["data.trained_on"] == "train-split"
    )
    # Trained on the data at HEAD (later commits hold audit files: the alias history).
    assert tags["data.rev"] == ws.git("log", "-1", "--format=%H", "--", "data")
    assert ws.git("diff", "--name-only", tags["data.rev"], "HEAD") == "audit/alias_history.jsonl"
    submit(ws, {"kind": "class", "class_label": 5})
    outcome = deletion_batch(str(ws.root))
    assert outcome.status == "awaiting_approval", outcome.reason
    assert outcome.gates["base_model_met_forgetting_gates"] is False
    assert reg.resolve(name, outcome.model_version).tags["base_version"] == "1"


def test_import_users_own_architecture_by_builder_path(tmp_path, capsys):
    import mlflow.pyfunc

    from components.settings import TrainSettings
    from components.training import train_classifier

    ws = fresh(tmp_path, BUILDER)
    net = tiny_net()
    train_classifier(
        net, read_state(ws, "HEAD").train, TrainSettings(epochs=2), torch.device("cpu")
    )
    ckpt = tmp_path / "tiny.safetensors"
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in net.state_dict().items()}, str(ckpt))
    code, out, err = run(
        capsys,
        "-w",
        ws.root,
        "model",
        "import",
        "--checkpoint",
        ckpt,
        "--trained-on",
        "train-split",
    )
    assert code == 0, err
    assert "imported tiny.safetensors as digits-cnn/1 (champion)" in " ".join(out.split())
    x = read_state(ws, "HEAD", pixels=True).test.x[:32]
    ws.registry().activate()
    served = mlflow.pyfunc.load_model("models:/digits-cnn@champion").predict(x)
    with torch.no_grad():
        from components.models import to_input

        assert np.array_equal(served, net.eval()(to_input(x)).numpy())


@pytest.mark.skipif(
    not (RESNET20.exists() and CIFAR_TEST.exists()), reason="../shared models/datasets absent"
)
def test_import_pretrained_resnet20_checkpoint(tmp_path, capsys):
    """The akamaster checkpoint on 2,000 official CIFAR-10 test images (a small workspace): the
    import records the file's sha256 and reaches the checkpoint's published accuracy."""
    t = np.load(CIFAR_TEST)
    data = tmp_path / "cifar-small"
    data.mkdir()
    np.savez(data / "train.npz", x=t["x"][:1000], y=t["y"][:1000], names=t["names"][:1000])
    np.savez(
        data / "test.npz", x=t["x"][1000:2000], y=t["y"][1000:2000], names=t["names"][1000:2000]
    )
    params = Path(__file__).resolve().parents[2] / "examples" / "cifar10_resnet20" / "params.yaml"
    import yaml

    cfg = yaml.safe_load(params.read_text().replace("__DATA_DIR__", str(data)))
    ws = fresh(tmp_path, {k: cfg[k] for k in ("data", "model", "lora", "rfa", "registry")})
    code, out, err = run(capsys, "-w", ws.root, "model", "import", "--checkpoint", RESNET20)
    assert code == 0, err
    mv = ws.registry().champion("cifar10-resnet20")
    assert (
        mv.tags["source.sha256"]
        == "12fca82f0bebc4135bf1f32f6e3710e61d5108578464b84fd6d7f5c1b04036c8"
    )
    assert mv.tags["data.trained_on"] == "train-files"
    run_ = ws.registry().client.get_run(mv.run_id)
    assert run_.data.metrics["acc_test"] > 88.0  # published: 91.73 % on the whole test split
    assert set(read_state(ws, "HEAD", pixels=False).train.ids.tolist()) == set(
        t["names"][:1000].tolist()
    )  # data.id_key


def test_import_from_an_mlflow_uri_of_the_users_own_server(
    tmp_path, trained_ws, base_model, capsys, monkeypatch
):
    """models:/NAME@ALIAS from another tracking store (a version our pipeline registered there), and
    runs:/ID/PATH of a plain `mlflow.pytorch.log_state_dict`."""
    import mlflow
    import mlflow.pytorch

    ws = fresh(tmp_path / "a")
    src = trained_ws.registry().tracking_uri
    code, out, err = run(
        capsys,
        "-w",
        ws.root,
        "model",
        "import",
        "--uri",
        "models:/digits-cnn@champion",
        "--tracking-uri",
        src,
        "--trained-on",
        "train-split",
    )
    assert code == 0, err
    tags = ws.registry().champion("digits-cnn").tags
    assert tags["source.uri"] == "models:/digits-cnn@champion" and tags["source.version"] == "1"
    assert tags["model_digest"] == trained_ws.registry().champion("digits-cnn").tags["model_digest"]

    theirs = f"sqlite:///{tmp_path}/theirs.db"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", theirs)  # set_tracking_uri exports it; removed below
    mlflow.set_tracking_uri(theirs)
    with mlflow.start_run() as r:
        mlflow.pytorch.log_state_dict(base_model.state_dict(), "weights")
    monkeypatch.delenv("MLFLOW_TRACKING_URI")
    ws2 = fresh(tmp_path / "b")
    code, out, err = run(
        capsys,
        "-w",
        ws2.root,
        "model",
        "import",
        "--uri",
        f"runs:/{r.info.run_id}/weights",
        "--tracking-uri",
        theirs,
        "--trained-on",
        "train-split",
    )
    assert code == 0, err
    assert ws2.registry().champion("digits-cnn").tags["source.run_id"] == r.info.run_id


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _cases(tmp: Path, base_model) -> dict:
    torch.save(base_model.state_dict(), tmp / "ok.pt")
    torch.save(base_model, tmp / "pickled-module.pt")
    from components.models import SmallCNN

    torch.save(SmallCNN(1, 10, 16, [0.0], [1.0]).state_dict(), tmp / "narrow.pt")
    torch.save(tiny_net(num_classes=5).state_dict(), tmp / "five-classes.pt")
    split = ["--trained-on", "train-split"]
    return {
        "does not fit": (
            None,
            ["--checkpoint", tmp / "narrow.pt", *split],
            "does not fit the architecture",
        ),
        "no file": (None, ["--checkpoint", tmp / "missing.pt", *split], "no such file"),
        "pickle": (
            None,
            ["--checkpoint", tmp / "pickled-module.pt", *split],
            "cannot be read as weights only",
        ),
        "builder import": (
            {"model": {"arch": "builder", "builder": "no_such_pkg.nets:build"}},
            ["--checkpoint", tmp / "ok.pt", *split],
            "cannot import no_such_pkg.nets",
        ),
        "taps": (
            {"rfa": {"taps": ["block9"]}},
            ["--checkpoint", tmp / "ok.pt", *split],
            "rfa.taps ['block9'] name no layer",
        ),
        "lora targets": (
            {"lora": {"target_modules": r"nothing\.here"}},
            ["--checkpoint", tmp / "ok.pt", *split],
            "matches no Conv/Linear/attention layer",
        ),
        "labels": (
            {**BUILDER, "model": {**BUILDER["model"], "builder_kwargs": {"num_classes": 5}}},
            ["--checkpoint", tmp / "five-classes.pt", *split],
            "labels outside the model's classes",
        ),
        "uri": (None, ["--uri", "models:/no-such-model/1", *split], "does not resolve"),
        "server down": (
            None,
            ["--uri", "models:/m/1", "--tracking-uri", f"http://127.0.0.1:{_free_port()}", *split],
            "unreachable",
        ),
        "overlap": (
            None,
            ["--checkpoint", tmp / "ok.pt", "--trained-on", "train-files"],
            "carved from the training files",
        ),
    }


@pytest.mark.parametrize(
    "case",
    [
        "does not fit",
        "no file",
        "pickle",
        "builder import",
        "taps",
        "lora targets",
        "labels",
        "uri",
        "server down",
        "overlap",
    ],
)
def test_bad_import_is_one_line_and_registers_nothing(tmp_path, base_model, capsys, case):
    overrides, args, needle = _cases(tmp_path, base_model)[case]
    ws = fresh(tmp_path, overrides)
    head = ws.git("rev-parse", "HEAD")
    code, _, err = run(capsys, "-w", ws.root, "model", "import", *args)
    assert code == 2
    one_line_error(err, needle)
    assert ws.registry().versions("digits-cnn") == [] and ws.git("rev-parse", "HEAD") == head


def test_a_test_image_identical_to_a_training_image_is_refused(tmp_path, capsys):
    """Declared training data checked by content too: a duplicated image is not unseen data."""
    d = tmp_path / "npz"
    d.mkdir()
    rng = np.random.default_rng(0)
    x = rng.integers(0, 255, (40, 8, 8), dtype=np.uint8)
    y = np.arange(40) % 4
    x_te, y_te = x[:12].copy(), y[:12].copy()
    x_te[1:] = rng.integers(0, 255, (11, 8, 8), dtype=np.uint8)  # test image 0 is training image 0
    np.savez(d / "train.npz", x=x, y=y)
    np.savez(d / "test.npz", x=x_te, y=y_te)
    ws = fresh(
        tmp_path,
        {
            "data": {
                "source": "npz",
                "root": str(d),
                "heldout_from": "test",
                "heldout_fraction": 0.5,
            }
        },
    )
    code, _, err = run(
        capsys, "-w", ws.root, "model", "import", "--checkpoint", tmp_path / "any.pt"
    )
    assert code == 2
    one_line_error(err, "have the same pixels and label as training samples")
    assert ws.registry().versions("digits-cnn") == []


def test_data_ids_prints_a_seeded_draw_of_the_snapshot(trained_ws, capsys):
    code, out, _ = run(capsys, "-w", trained_ws.root, "data", "ids", "--random", "5", "--seed", "3")
    ids = out.strip().split(",")
    assert code == 0 and len(set(ids)) == 5
    assert set(ids) <= set(read_state(trained_ws, "HEAD", pixels=False).train.ids.tolist())
    assert (
        run(capsys, "-w", trained_ws.root, "data", "ids", "--random", "5", "--seed", "3")[1] == out
    )
