"""Serving fixtures: a real `mlops serve` (uvicorn workers) on 127.0.0.1, the served model's feature
spec and real rows of its test split, and the OIP spec.

The Open Inference Protocol REST spec is never copied into the project: it is read from the location in
OIP_SPEC_LOCATION (a directory holding open_inference_rest.yaml, the file itself, or a URL); by default
../shared/specs/oip next to the repository where it exists, else the spec's canonical published file.
Only the tests that check conformance to the spec need it; they skip, saying where they looked, when
no location can be read. Correctness tests never depend on it.
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from .serve_helpers import ModelSpec, oip_spec_locations, read_oip_spec, split_rows, start_server


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
def spec(model_dir) -> ModelSpec:
    """The served model's feature spec, label classes and name (its model.json)."""
    return ModelSpec.from_dir(model_dir)


@pytest.fixture(scope="session")
def rows(pipeline, spec) -> list[dict[str, Any]]:
    """Real rows of the session pipeline's test split (raw feature values), to build requests from."""
    found = split_rows(pipeline.raw, pipeline.processed / "test.parquet", spec)
    assert len(found) >= 20, f"test split has {len(found)} rows"
    return found


@pytest.fixture(scope="session")
def oip_spec() -> dict[str, Any]:
    """The Open Inference Protocol REST OpenAPI document, from the first readable location."""
    tried = []
    for location in oip_spec_locations():
        try:
            return yaml.safe_load(read_oip_spec(location))
        except (OSError, ValueError) as e:
            tried.append(f"{location} ({e})")
    pytest.skip(
        "OIP spec not readable at " + "; ".join(tried) + ": set OIP_SPEC_LOCATION to a directory, file or URL"
    )
