"""pyfunc_model: the MLflow "models from code" definition that serves models/ as an MLflow pyfunc.

`mlops register` passes this file's path as `python_model`, so MLflow stores this source instead of a
cloudpickled object: nothing pickled is on the path. The artifact `model` is a directory holding the
model files (model.safetensors, model.onnx, model.json); `load_context` loads the ONNX export on ONNX
Runtime through `mlops.scorer.load_onnx`, which verifies its sha256 first: no torch at load or
predict time (a model trained with `train.onnx.exporter: none` cannot load here). For MLflow users:

    mlflow.pyfunc.load_model("models:/churn-mlp/3").predict(frame_of_raw_feature_columns)

returns one row per input row with the model's task's outputs (`mlops.task`): binary the positive-class
`probability` and the predicted `label`; multiclass one `probability[<class>]` column per class (in
model.json's class order) and the most probable class as `label`; regression the predicted value as
`prediction`. The columns are those of the registered signature (`mlops.pyfunc_bundle.signature`).

This module is loaded by MLflow as a script (it calls `set_model` at the end); the package never
imports it. It runs where this package is not installed: `mlops register` bundles every project module
reachable from the imports below (lazy ones included) and pins the third-party packages they import, both
derived by `mlops.pyfunc_bundle` from this file's import graph. Import project code with plain import
statements (no `importlib` by name), so the walk sees it.
"""

from __future__ import annotations

from typing import Any

import mlflow
import pandas as pd
from mlflow.pyfunc import PythonModel


class MlopsModel(PythonModel):
    """Raw feature columns in; the task's outputs out (probabilities and label, or the prediction)."""

    def load_context(self, context: Any) -> None:
        """Load and verify the ONNX export + JSON metadata from the `model` artifact."""
        from mlops import scorer

        self.model = scorer.load_onnx(context.artifacts["model"])

    def predict(
        self, context: Any, model_input: pd.DataFrame, params: dict[str, Any] | None = None
    ) -> pd.DataFrame:
        """Score a frame of raw feature columns (extra columns are ignored)."""
        out = self.model.predict_proba(model_input)
        task = self.model.task
        frame = pd.DataFrame(task.prediction_columns(out))  # `probability[<class>]` per class, multiclass
        labels = task.labels(out)
        if labels is not None:
            frame["label"] = labels
        return frame


mlflow.models.set_model(MlopsModel())
