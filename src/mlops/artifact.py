"""artifact: the model directory's files, without torch: read `model.json`, verify the weights' sha256.

`mlops.model.load` builds the network on top of `verify`; the server's supervisor calls `verify` alone
before importing torch, so a missing or altered model fails fast with its exit code (5 or 6).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from mlops.errors import ChecksumMismatch, ModelNotReady
from mlops.files import file_digest

FORMAT = "mlops-model/v1"
WEIGHTS = "model.safetensors"
METADATA = "model.json"


def read_metadata(model_dir: Path) -> dict[str, Any]:
    """Read model.json, raising ModelNotReady (exit 5) when it is missing or unreadable."""
    path = model_dir / METADATA
    try:
        meta = json.loads(path.read_text())
    except FileNotFoundError as e:
        raise ModelNotReady(f"{path}: model metadata not found") from e
    except (OSError, ValueError) as e:
        raise ModelNotReady(f"{path}: unreadable model metadata ({e})") from e
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        found = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
        raise ModelNotReady(f"{path}: format {found!r}, expected {FORMAT!r}")
    return meta


def verify(model_dir: Path) -> tuple[dict[str, Any], Path]:
    """model.json and the path of weights whose sha256 matches it.

    Raises:
        ModelNotReady: files missing or unreadable (exit 5).
        ChecksumMismatch: the weights' sha256 differs from model.json (exit 6).
    """
    meta = read_metadata(model_dir)
    try:
        weights = model_dir / meta["weights"]["file"]
        expected = meta["weights"]["sha256"]
    except (KeyError, TypeError) as e:
        raise ModelNotReady(f"{model_dir / METADATA}: unreadable model metadata (weights: {e!r})") from e
    try:
        digest = file_digest(weights)
    except FileNotFoundError as e:
        raise ModelNotReady(f"{weights}: model weights not found") from e
    if digest != expected:
        raise ChecksumMismatch(
            f"{weights}: sha256 {digest[:12]}… does not match model.json ({expected[:12]}…)"
        )
    return meta, weights
