"""artifact: the model directory's files, without torch: read `model.json`, verify each file's sha256.

The directory holds `model.safetensors` (the trained weights: the record of truth), `model.onnx` (the
same network exported for ONNX Runtime: what `serve.backend: onnx` serves) and `model.json`, which
records the sha256 of both. `verify` checks one of them; `mlops.model.load` (torch) and
`mlops.scorer.load_onnx` (ONNX Runtime) build on it, and the server's supervisor calls it before
importing either runtime, so a missing or altered model fails fast with its exit code (5 or 6).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal

from mlops.errors import ChecksumMismatch, ModelNotReady
from mlops.files import file_digest

FORMAT = "mlops-model/v1"
WEIGHTS = "model.safetensors"
ONNX = "model.onnx"
METADATA = "model.json"
Part = Literal["weights", "onnx"]
"""A model.json key naming one verified file: `weights` (safetensors) or `onnx`."""
_LABEL = {"weights": "model weights", "onnx": "ONNX model"}


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


def file_names(meta: dict[str, Any]) -> list[str]:
    """The model files model.json names (weights, then the ONNX export when there is one), then model.json."""
    names = [meta["weights"]["file"]]
    if meta.get("onnx"):
        names.append(meta["onnx"]["file"])
    return [*names, METADATA]


def _entry(model_dir: Path, meta: dict[str, Any], part: Part) -> tuple[Path, str]:
    entry = meta.get(part)
    if entry is None and part == "onnx":
        raise ModelNotReady(
            f"{model_dir / METADATA}: the model has no ONNX export (train.onnx.exporter: none?); "
            "serve it with serve.backend: torch"
        )
    try:
        return model_dir / entry["file"], entry["sha256"]
    except (KeyError, TypeError) as e:
        raise ModelNotReady(f"{model_dir / METADATA}: unreadable model metadata ({part}: {e!r})") from e


def _check(path: Path, digest: str, expected: str, part: Part) -> None:
    if digest != expected:
        raise ChecksumMismatch(
            f"{path}: sha256 {digest[:12]}… does not match model.json's {part} ({expected[:12]}…)"
        )


def verify(model_dir: Path, part: Part = "weights") -> tuple[dict[str, Any], Path]:
    """model.json and the path of its `part` file (weights or onnx) whose sha256 matches it.

    Raises:
        ModelNotReady: files missing or unreadable, or no ONNX export when `part` is onnx (exit 5).
        ChecksumMismatch: the file's sha256 differs from model.json (exit 6).
    """
    meta = read_metadata(model_dir)
    path, expected = _entry(model_dir, meta, part)
    try:
        digest = file_digest(path)
    except FileNotFoundError as e:
        raise ModelNotReady(f"{path}: {_LABEL[part]} not found") from e
    _check(path, digest, expected, part)
    return meta, path


def read_verified(model_dir: Path, part: Part) -> tuple[dict[str, Any], bytes]:
    """model.json and the bytes of its `part` file, hashed as read (what is checked is what is used).

    Raises:
        ModelNotReady, ChecksumMismatch: as `verify`.
    """
    meta = read_metadata(model_dir)
    path, expected = _entry(model_dir, meta, part)
    try:
        data = path.read_bytes()
    except FileNotFoundError as e:
        raise ModelNotReady(f"{path}: {_LABEL[part]} not found") from e
    _check(path, hashlib.sha256(data).hexdigest(), expected, part)
    return meta, data
