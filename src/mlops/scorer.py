"""scorer: the served model without torch — model.json + model.onnx on ONNX Runtime.

`Scorer` is what every consumer of a trained model uses (the server, the gate, evaluate, the MLflow
pyfunc): raw feature columns -> preprocessing (model.json's state) -> `forward` (float32 rows
[rows, features] -> float64 positive-class probabilities [rows]) -> labels at the decision threshold.
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

from mlops import labels
from mlops.artifact import read_verified
from mlops.errors import ModelNotReady
from mlops.features import Preprocessor

log = logging.getLogger(__name__)

INPUT = "x"
"""The ONNX graph's input: float32 feature rows, shape [rows, features] (rows is a dynamic axis)."""
OUTPUT = "probability"
"""The ONNX graph's output: float32 positive-class probability (sigmoid of the logit), shape [rows]."""


class Scorer:
    """A verified model ready to score raw feature columns, whatever runs its forward pass.

    Subclasses set `metadata` (model.json), `preprocessor` and `backend`, and implement `forward`.
    """

    metadata: dict[str, Any]
    preprocessor: Preprocessor
    backend: str

    def forward(self, x: np.ndarray) -> np.ndarray:
        """Positive-class probabilities (float64, [rows]) for float32 feature rows ([rows, features])."""
        raise NotImplementedError

    @property
    def name(self) -> str:
        """The model name from model.json."""
        return self.metadata["name"]

    @property
    def threshold(self) -> float:
        """The decision threshold on the positive-class probability."""
        return float(self.metadata["decision_threshold"])

    def predict_proba(self, columns: Mapping[str, Any]) -> np.ndarray:
        """Positive-class probabilities (float64) for raw feature columns (name -> values)."""
        return self.forward(self.preprocessor.transform(columns))

    def predict_label(self, proba: np.ndarray) -> list[str]:
        """Class labels for probabilities, using the model's decision threshold."""
        classes, positive = labels.from_metadata(self.metadata)
        return labels.predict(proba, self.threshold, classes, positive)


@dataclass
class OnnxModel(Scorer):
    """A model served by ONNX Runtime from its verified ONNX export."""

    metadata: dict[str, Any]
    preprocessor: Preprocessor
    session: Any  # onnxruntime.InferenceSession
    backend: str = "onnx"

    def __post_init__(self) -> None:
        self._run = self.session.run
        self._outputs = [OUTPUT]

    def forward(self, x: np.ndarray) -> np.ndarray:
        """Positive-class probabilities (float64, [rows]) for float32 feature rows ([rows, features])."""
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
