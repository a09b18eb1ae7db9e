"""The MLflow pyfunc model of every registered version (MLflow "models from code").

MLflow copies this file into the model folder and runs it at load time, so no Python object is
pickled: the network is rebuilt from `spec.json` and its weights read from `weights.safetensors`
by the same `components.models.load_model` the pipeline uses (shipped with the model as code).

Input: uint8 images (N, C, H, W), 0..255, as the workspace stores them. Output: float32 logits
(N, classes), exactly what the pipeline's own loader computes for the same images.
"""

from __future__ import annotations

import json
from pathlib import Path

import mlflow
import numpy as np
from mlflow.pyfunc import PythonModel


class UnlearnPyfunc(PythonModel):
    def load_context(self, context: mlflow.pyfunc.PythonModelContext) -> None:
        from components.models import load_model

        spec = json.loads(Path(context.artifacts["spec"]).read_text())
        self.model = load_model(spec, Path(context.artifacts["weights"]).read_bytes())

    # np.ndarray: a type hint MLflow takes as "no schema from hints" (the saved tensor signature
    # validates inputs), so it does not ask for hints on every load.
    def predict(
        self,
        context: mlflow.pyfunc.PythonModelContext,
        model_input: np.ndarray,
        params: dict | None = None,
    ) -> np.ndarray:
        import torch

        from components.models import to_input

        x = np.asarray(model_input)
        if x.dtype != np.uint8:
            x = np.clip(np.rint(x), 0, 255).astype(np.uint8)
        with torch.no_grad():
            return self.model(to_input(x)).float().numpy()


mlflow.models.set_model(UnlearnPyfunc())
