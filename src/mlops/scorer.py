"""scorer: the served model without torch — model.json + model.onnx on ONNX Runtime.

`Scorer` is what every consumer of a trained model uses (the server, the gate, evaluate, the MLflow
pyfunc): raw feature columns -> preprocessing (model.json's state) -> `forward` (float32 rows
[rows, features] -> the task's float64 outputs: positive-class probabilities [rows], class
probabilities [rows, classes] or predicted values [rows]; mlops.task) -> labels (classification).
`load_onnx` builds one on ONNX Runtime (CPUExecutionProvider) from the verified ONNX file;
`mlops.model.load` builds one on torch from the safetensors weights (`serve.backend: torch`). This
module never imports torch, so neither does anything that scores through it with ONNX Runtime.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mlops.artifact import read_verified
from mlops.errors import ModelNotReady
from mlops.features import Preprocessor
from mlops.task import Task

log = logging.getLogger(__name__)

INPUT = "x"
"""The ONNX graph's input: float32 feature rows, shape [rows, features] (rows is a dynamic axis)."""
OUTPUT = "probability"
"""The binary ONNX graph's output: float32 positive-class probability (sigmoid of the logit), shape [rows].
Other tasks name theirs after their output (mlops.task.OUTPUT); model.json `onnx.output` records it."""


class Scorer:
    """A verified model ready to score raw feature columns, whatever runs its forward pass.

    Subclasses set `metadata` (model.json), `preprocessor` and `backend`, and implement `forward`.
    """

    metadata: dict[str, Any]
    preprocessor: Preprocessor
    backend: str

    def forward(self, x: np.ndarray) -> np.ndarray:
        """The task's outputs (float64, [rows], or [rows, classes] for multiclass) for float32 feature
        rows ([rows, features])."""
        raise NotImplementedError

    @property
    def task(self) -> Task:
        """What the model predicts (model.json `task` and `label`)."""
        cached = self.__dict__.get("_task")
        if cached is None:
            cached = self.__dict__["_task"] = Task.from_metadata(self.metadata)
        return cached

    @property
    def name(self) -> str:
        """The model name from model.json."""
        return self.metadata["name"]

    @property
    def threshold(self) -> float:
        """The decision threshold on the positive-class probability (binary; 0.5 for other tasks)."""
        return float(self.metadata.get("decision_threshold", 0.5))

    def predict_proba(self, columns: Mapping[str, Any]) -> np.ndarray:
        """The model's outputs (float64) for raw feature columns (name -> values): positive-class
        probabilities, class probabilities [rows, classes] or predicted values (mlops.task)."""
        return self.forward(self.preprocessor.transform(columns))

    predict = predict_proba  # the name that reads right for regression

    def predict_label(self, proba: np.ndarray) -> list[str]:
        """Class labels for the model's outputs (binary: at the decision threshold; multiclass: the most
        probable class). A regression model has none (ValueError)."""
        predicted = self.task.labels(proba)
        if predicted is None:
            raise ValueError(f"model {self.name!r} is a regression model: it predicts values, not labels")
        return predicted


@dataclass
class OnnxModel(Scorer):
    """A model served by ONNX Runtime from its verified ONNX export."""

    metadata: dict[str, Any]
    preprocessor: Preprocessor
    session: Any  # onnxruntime.InferenceSession
    backend: str = "onnx"

    def __post_init__(self) -> None:
        self._run = self.session.run
        self._outputs = [(self.metadata.get("onnx") or {}).get("output", OUTPUT)]

    def forward(self, x: np.ndarray) -> np.ndarray:
        """The task's outputs (float64, [rows] or [rows, classes]) for float32 feature rows."""
        return self._run(self._outputs, {INPUT: x})[0].astype(np.float64)


def onnx_session(model: bytes, threads: int) -> Any:
    """An ONNX Runtime CPU session: `threads` intra-op threads, sequential execution (no inter-op pool)."""
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    options.log_severity_level = 3  # errors only: the optimizer's notes are not the operator's business
    return ort.InferenceSession(model, sess_options=options, providers=["CPUExecutionProvider"])


def load_onnx(model_dir: str | Path, threads: int = 1) -> OnnxModel:
    """Load model.json and the ONNX file it names (sha256 verified on the bytes loaded) on ONNX Runtime.

    Args:
        model_dir: the model directory (models/).
        threads: ONNX Runtime intra-op threads.

    Raises:
        ModelNotReady: files missing or unreadable, no ONNX export, or ONNX Runtime rejects it (exit 5).
        ChecksumMismatch: the ONNX file's sha256 differs from model.json (exit 6).
    """
    model_dir = Path(model_dir)
    meta, data = read_verified(model_dir, "onnx")
    try:
        session = onnx_session(data, threads)
    except Exception as e:  # onnxruntime raises its own exception types (Fail, InvalidGraph, ...)
        raise ModelNotReady(f"{model_dir / meta['onnx']['file']}: ONNX Runtime cannot load it ({e})") from e
    return OnnxModel(meta, Preprocessor.from_dict(meta["preprocessing"]), session)
