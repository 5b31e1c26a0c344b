"""Serving fixtures: a real `mlops serve` (uvicorn workers) on 127.0.0.1, and the OIP spec.

The Open Inference Protocol spec is read from OIP_SPEC_DIR (default ../shared/specs/oip next to the
repository); it is never copied into the project.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from .serve_helpers import REPO, start_server


@pytest.fixture(scope="session")
def model_dir(pipeline, tmp_path_factory) -> Path:
    """A private copy of the session's trained model."""
    target = tmp_path_factory.mktemp("serve-model") / "models"
    shutil.copytree(pipeline.models, target)
    return target


@pytest.fixture(scope="session")
def server(model_dir, tmp_path_factory):
    """One shared server (2 workers, prediction log on every request, flushed every 0.2 s)."""
    root = tmp_path_factory.mktemp("serve")
    srv = start_server(
        root,
        model_dir,
        workers=2,
        max_body_bytes=65536,
        prediction_log={"rate": 1.0, "dir": str(root / "predictions"), "flush_interval_s": 0.2},
    )
    yield srv
    assert srv.stop() == 0, srv.log.read_text()[-3000:]


@pytest.fixture(scope="session")
def oip_spec() -> dict[str, Any]:
    """The Open Inference Protocol REST OpenAPI document from the shared specs."""
    spec_dir = Path(os.environ.get("OIP_SPEC_DIR", REPO.parent / "shared" / "specs" / "oip"))
    path = spec_dir / "open_inference_rest.yaml"
    if not path.exists():
        pytest.skip(f"OIP spec not found at {path} (set OIP_SPEC_DIR to the specs/oip directory)")
    return yaml.safe_load(path.read_text())
