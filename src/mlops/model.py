"""model: the torch MLP for tabular data, and its artifact (safetensors weights + JSON metadata).

The artifact is two files: `model.safetensors` (weights only; safetensors cannot carry code, so nothing
on the serving path unpickles) and `model.json` (architecture, feature spec with dtypes and allowed
categories, preprocessing state, class labels, decision threshold, params hash, data md5 and the sha256
of the weights). `load()` verifies that sha256 before building the network.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from mlops import files, labels
from mlops.artifact import FORMAT, METADATA, WEIGHTS, verify
from mlops.artifact import read_metadata as read_metadata  # re-exported: callers use model.read_metadata
from mlops.errors import ModelNotReady
from mlops.features import Preprocessor

log = logging.getLogger(__name__)

ACTIVATIONS = {"relu": nn.ReLU, "gelu": nn.GELU, "tanh": nn.Tanh}


class MLP(nn.Module):
    """Fully connected network: [Linear -> activation -> Dropout] x len(hidden) -> Linear(1) logit."""

    def __init__(self, input_dim: int, hidden: list[int], activation: str = "relu", dropout: float = 0.0):
        super().__init__()
        layers: list[nn.Module] = []
        width = input_dim
        for h in hidden:
            layers += [nn.Linear(width, h), ACTIVATIONS[activation](), nn.Dropout(dropout)]
            width = h
        layers.append(nn.Linear(width, 1))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Return one logit per row, shape (rows,)."""
        return self.net(x).squeeze(-1)


def build(architecture: Mapping[str, Any]) -> MLP:
    """Build the network described by model.json's `architecture`."""
    return MLP(
        architecture["input_dim"],
        list(architecture["hidden"]),
        architecture["activation"],
        architecture["dropout"],
    )


def save(model_dir: Path, net: MLP, metadata: dict[str, Any]) -> dict[str, Any]:
    """Write weights and metadata atomically; the metadata gains the weights' sha256.

    Args:
        model_dir: target directory (models/).
        net: the trained network.
        metadata: model.json content without `weights`.

    Returns:
        The metadata written.
    """
    model_dir.mkdir(parents=True, exist_ok=True)
    state = {k: v.detach().contiguous() for k, v in net.state_dict().items()}
    with files.atomic_path(model_dir / WEIGHTS) as tmp:
        save_file(state, str(tmp), metadata={"format": FORMAT})
        digest = files.file_digest(tmp)
    meta = {**metadata, "format": FORMAT, "weights": {"file": WEIGHTS, "sha256": digest}}
    files.write_json(model_dir / METADATA, meta)
    return meta


@dataclass
class LoadedModel:
    """A verified model ready to score raw feature columns."""

    metadata: dict[str, Any]
    net: MLP
    preprocessor: Preprocessor

    @property
    def name(self) -> str:
        """The model name from model.json."""
        return self.metadata["name"]

    @property
    def threshold(self) -> float:
        """The decision threshold on the positive-class probability."""
        return float(self.metadata["decision_threshold"])

    def predict_proba(self, columns: Mapping[str, Any]) -> np.ndarray:
        """Positive-class probabilities for raw feature columns (name -> values)."""
        x = torch.from_numpy(self.preprocessor.transform(columns))
        with torch.inference_mode():
            return torch.sigmoid(self.net(x)).numpy().astype(np.float64)

    def predict_label(self, proba: np.ndarray) -> list[str]:
        """Class labels for probabilities, using the model's decision threshold."""
        classes, positive = labels.from_metadata(self.metadata)
        return labels.predict(proba, self.threshold, classes, positive)


def load(model_dir: str | Path) -> LoadedModel:
    """Load and verify a model directory.

    Raises:
        ModelNotReady: files missing or unreadable (exit 5, HTTP 503).
        ChecksumMismatch: the weights' sha256 differs from model.json (exit 6).
    """
    model_dir = Path(model_dir)
    meta, weights = verify(model_dir)
    net = build(meta["architecture"])
    try:
        net.load_state_dict(load_file(str(weights)), strict=True)
    except SafetensorError as e:
        raise ModelNotReady(f"{weights}: not a valid safetensors file ({e})") from e
    except (RuntimeError, OSError) as e:
        raise ModelNotReady(f"{weights}: weights do not fit the architecture in model.json ({e})") from e
    net.eval()
    return LoadedModel(meta, net, Preprocessor.from_dict(meta["preprocessing"]))
