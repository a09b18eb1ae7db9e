"""Shared fixtures: a quiet, isolated environment; tiny settings; real workspaces.

Everything real runs locally: git + DVC repos with a local remote in temp dirs, sqlite MLflow
stores inside those workspaces, Prefect's test server (prefect_test_harness).
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest
import yaml

_SESSION_TMP = Path(tempfile.mkdtemp(prefix="unlearn-tests-"))
# Workspaces, Prefect home and DVC site cache of this run: tens of MB each, gone when it ends.
atexit.register(shutil.rmtree, _SESSION_TMP, ignore_errors=True)
# Set before anything imports prefect / mlflow / dvc (they read these at import time).
os.environ.update(
    {
        "DO_NOT_TRACK": "true",
        "MLFLOW_DISABLE_TELEMETRY": "true",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DVC_NO_ANALYTICS": "1",
        "HF_HUB_OFFLINE": "1",
        "PREFECT_HOME": str(_SESSION_TMP / "prefect-home"),
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
        "DVC_SITE_CACHE_DIR": str(_SESSION_TMP / "dvc-site"),
        "UNLEARN_CERT_KEY": "test-signing-key-0123456789abcdef",
        "UNLEARN_KEY_DIR": str(_SESSION_TMP / "keys"),
    }
)
os.environ.pop("MLFLOW_TRACKING_URI", None)
if os.environ.get("PYTEST_XDIST_WORKER"):
    # One torch thread per test process (and the CLIs it starts): with `make test`'s two workers
    # on two cores, two OpenMP threads each spin against each other and a run took over 20
    # minutes for its first 32 tests, against 13 minutes for all of them at one thread.
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    # The workers start with COLUMNS=80, which a serial run under a pipe does not have: the CLI
    # would fold its tables at 80 columns in one kind of run and not the other.
    os.environ.pop("COLUMNS", None)
os.environ.pop("PREFECT_API_URL", None)

from pipelines.env import quiet_environment  # noqa: E402

quiet_environment()

# DVC binds its log handler to sys.stderr when first imported: imported inside a test that
# captures output (capsys), the handler would keep that test's stream, closed afterwards, and
# every later DVC warning would raise LoggingException. Imported here, it keeps pytest's own.
import dvc.repo  # noqa: E402, F401

from pipelines.keys import init_keys  # noqa: E402

init_keys()  # this run's batch and review signing keys (Ed25519, in UNLEARN_KEY_DIR above)

ROOT = Path(__file__).resolve().parent.parent
SHARED = ROOT.parent / "shared"

# Every test lives in one tier folder and carries that tier's marker, so `-m unit` (seconds),
# `-m behaviour` (toy forgetting, minutes) and `-m integration` (the real services) select by
# folder and marker alike.
TIERS = ("unit", "behaviour", "integration")


def pytest_collection_modifyitems(config, items):
    for item in items:
        tier = Path(str(item.fspath)).parent.name
        if tier not in TIERS:
            raise pytest.UsageError(f"{item.nodeid}: tests live in tests/{{{','.join(TIERS)}}}/")
        item.add_marker(getattr(pytest.mark, tier))


@dataclass(frozen=True)
class ArchCase:
    """Per built-in architecture, what the tests run it with: feature taps, LoRA targets (peft
    regex) and the penultimate (pooled) module a linear probe reads. A workspace names its own in
    params.yaml; the benchmark in benchmarks/params/*.yaml."""

    taps: tuple[str, ...]
    lora_targets: str
    penultimate: str


ARCH_CASES: dict[str, ArchCase] = {
    "small_cnn": ArchCase(
        ("block1", "block2", "block3"), r"block2\.conv|block3\.conv|head", "pool"
    ),
    # layer3 convs + the head: under 5 % of ResNet-20 at rank 3. Taps inside the adapted stage:
    # layer1 / layer2 sit below every adapter, so their residual is zero by construction.
    "resnet20": ArchCase(
        ("layer3.0", "layer3.1", "layer3"), r"layer3\.\d+\.conv[12]|linear", "pool"
    ),
    "resnet32": ArchCase(
        ("layer3.1", "layer3.3", "layer3"), r"layer3\.\d+\.conv[12]|linear", "pool"
    ),
    # torchvision ResNet-18: the last stage's convs + fc.
    "resnet18": ArchCase(
        ("net.layer4.0", "net.layer4"), r"net\.layer4\.\d+\.conv[12]|net\.fc", "net.avgpool"
    ),
    # ViT: attention of the last three encoder blocks + the head; taps on block outputs.
    "vit": ArchCase(
        ("net.encoder.layers.encoder_layer_4", "net.encoder.layers.encoder_layer_5"),
        r".*encoder_layer_[345]\.self_attention|net\.heads\.head",
        "net.encoder.ln",
    ),
}


# Smaller training for tests: the same code paths, a fraction of the epochs.
FAST_PARAMS = {"train": {"epochs": 12}}


def write_params(path: Path, overrides: dict | None = None) -> Path:
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    for section, values in {**FAST_PARAMS, **(overrides or {})}.items():
        params.setdefault(section, {}).update(values)
    path.write_text(yaml.safe_dump(params, sort_keys=False))
    return path


@pytest.fixture
def bf16_anywhere(monkeypatch):
    """bf16 on this CPU whatever it has. The product refuses bf16 on a CPU without AVX512-BF16 /
    AMX (runtime._bf16_policy), because there torch emulates it, slower than fp32; emulated it
    rounds to bf16 and accumulates in fp32 all the same, so a test of the bf16 path runs it
    rather than skip it: a CI machine without those units would otherwise never run that path,
    which every committed CIFAR-10 and Fashion-MNIST table and CUDA's `auto` take."""
    from components import runtime

    if not runtime.bf16_cpu_supported():
        monkeypatch.setattr(runtime, "bf16_cpu_supported", lambda: True)


@pytest.fixture(scope="session")
def prefect_server():
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


@pytest.fixture(scope="session")
def digits():
    from components.data import load_dataset
    from components.settings import Settings

    return load_dataset(Settings().data)


@pytest.fixture(scope="session")
def base_model(digits):
    """A small CNN trained briefly on digits (shared, never mutated by tests)."""
    import torch

    from components.models import build_model, make_spec
    from components.runtime import set_seed
    from components.settings import TrainSettings
    from components.training import train_classifier

    set_seed(0)
    model = build_model(make_spec("small_cnn", digits.train.x, digits.num_classes, 32))
    train_classifier(model, digits.train, TrainSettings(epochs=12), torch.device("cpu"))
    return model


def make_workspace(tmp: Path, overrides: dict | None = None, train: bool = True, **init):
    """A workspace on the tiny settings (`init`: init_workspace's remote / request_store)."""
    from pipelines.base import train_base
    from pipelines.workspace import init_workspace

    params = write_params(tmp / "params-test.yaml", overrides)
    ws = init_workspace(tmp / "ws", params, **init)
    if train:
        train_base(ws)
    return ws


@pytest.fixture(scope="session")
def trained_ws(tmp_path_factory):
    """A workspace with a trained, registered base model and no batches (read-only use)."""
    return make_workspace(tmp_path_factory.mktemp("trained"))
