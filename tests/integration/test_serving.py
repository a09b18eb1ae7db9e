"""What the pipeline registers is a real MLflow model: MLflow's own loader and `mlflow models
serve` give the same logits as the pipeline's loader, from the weights' safetensors (no pickle)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import torch
import yaml

from components.models import to_input
from pipelines.registry import VersionRef
from pipelines.snapshot import read_split


def _pipeline_logits(ws, x: np.ndarray) -> np.ndarray:
    model, _ = ws.registry().load_model(VersionRef("digits-cnn", "1"))
    with torch.no_grad():
        return model(to_input(x)).numpy()


def test_pyfunc_load_model_predicts_the_pipelines_logits(trained_ws):
    import mlflow.pyfunc

    trained_ws.registry().activate()
    model = mlflow.pyfunc.load_model("models:/digits-cnn@champion")
    x = read_split(trained_ws, "HEAD", "test").x[:64]
    assert np.array_equal(model.predict(x), _pipeline_logits(trained_ws, x))
    sig = model.metadata.signature
    assert sig.inputs.to_dict()[0]["tensor-spec"] == {"dtype": "uint8", "shape": (-1, 1, 8, 8)}
    assert model.metadata.saved_input_example_info is not None


def test_version_folder_is_pickle_free(trained_ws):
    src = Path(trained_ws.registry().resolve("digits-cnn", "1").source.removeprefix("file://"))
    mlmodel = yaml.safe_load((src / "MLmodel").read_text())
    pyfunc = mlmodel["flavors"]["python_function"]
    # Models from code: MLflow runs pyfunc_model.py at load; no python_model.pkl is written.
    assert (
        pyfunc["loader_module"] == "mlflow.pyfunc.loaders.code_model"
        and "python_model" not in pyfunc
    )
    assert not [p for p in src.rglob("*") if p.suffix in (".pkl", ".pickle", ".pt", ".pth")]
    assert (src / "artifacts" / "weights.safetensors").is_file()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_mlflow_models_serve_answers_a_scoring_request(trained_ws, tmp_path):
    port = _free_port()
    bin_dir = Path(sys.executable).parent  # `mlflow models serve` runs `uvicorn` from PATH
    env = dict(
        os.environ,
        MLFLOW_TRACKING_URI=trained_ws.registry().tracking_uri,
        PATH=f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
    )
    mlflow_bin = bin_dir / "mlflow"
    proc = subprocess.Popen(
        [
            str(mlflow_bin),
            "models",
            "serve",
            "-m",
            "models:/digits-cnn@champion",
            "--env-manager",
            "local",
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
        ],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 180  # a busy 2-core machine: imports alone take seconds
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/ping", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            assert proc.poll() is None and time.monotonic() < deadline, (
                "mlflow models serve did not start"
            )
            time.sleep(0.5)
        x = read_split(trained_ws, "HEAD", "test").x[:5]
        req = urllib.request.Request(
            f"http://127.0.0.1:{port}/invocations",
            data=json.dumps({"inputs": x.tolist()}).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=60) as r:
            got = np.array(json.loads(r.read())["predictions"], dtype=np.float32)
        assert got.shape == (5, 10)
        np.testing.assert_allclose(got, _pipeline_logits(trained_ws, x), rtol=1e-6, atol=1e-6)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
