"""Robustness: schema-driven fuzzing (schemathesis, against the OpenAPI document the server publishes)
and property-based request bodies (hypothesis) find no 5xx and no crash."""

from __future__ import annotations

import json
import subprocess
import sys

import httpx
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from mlops.errors import DataError
from mlops.features import NumericState, Preprocessor
from mlops.serve import protocol
from mlops.serve.encoding import Encoder

from .serve_helpers import ROW, infer_body

pytestmark = pytest.mark.slow

FEATURES = json.loads(
    json.dumps(
        [
            {
                "name": n,
                "kind": "categorical" if isinstance(v, str) else "numeric",
                "dtype": "BYTES" if isinstance(v, str) else ("FP64" if isinstance(v, float) else "INT64"),
                "min": None if isinstance(v, str) else 0,
                "max": None if isinstance(v, str) else 1000,
                "categories": [v, "other"] if isinstance(v, str) else None,
                "nullable": n == "total_charges",
            }
            for n, v in ROW.items()
        ]
    )
)

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False)
    | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=6), inner, max_size=4),
    max_leaves=20,
)
tensor = st.fixed_dictionaries(
    {
        "name": st.sampled_from([*ROW, "unknown"]),
        "shape": st.lists(st.integers(-2, 3), max_size=3) | json_values,
        "datatype": st.sampled_from(["INT64", "FP64", "FP32", "BYTES", "BOOL", "x"]) | json_values,
        "data": st.lists(json_values, max_size=3) | json_values,
    }
)
bodies = (
    st.fixed_dictionaries(
        {"inputs": st.lists(tensor, max_size=20)},
        optional={"id": json_values, "outputs": json_values, "parameters": json_values},
    )
    | json_values
)


PREPROCESSOR = Preprocessor(
    numeric={f["name"]: NumericState(1.0, 2.0, 3.0) for f in FEATURES if f["kind"] == "numeric"},
    categorical={f["name"]: f["categories"] for f in FEATURES if f["kind"] == "categorical"},
)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(bodies)
def test_encoder_raises_only_data_errors(body):
    encoder = Encoder(FEATURES, PREPROCESSOR)
    try:
        request = protocol.decode(json.dumps(body).encode())
        _, x = encoder.encode(request)
    except DataError:
        return
    assert x.shape[1] == PREPROCESSOR.width and np.isfinite(x).all()


valid_rows = st.lists(
    st.fixed_dictionaries(
        {
            name: (
                st.sampled_from([value, "other"])
                if isinstance(value, str)
                else st.floats(0, 1000)
                if isinstance(value, float)
                else st.integers(0, 1000)
            )
            for name, value in ROW.items()
        }
        | {"total_charges": st.none() | st.floats(0, 1000)}
    ),
    min_size=1,
    max_size=70,
)


@settings(max_examples=200, deadline=None)
@given(valid_rows)
def test_encoder_matches_preprocessor_transform(rows):
    """The server's fused encoder computes exactly what mlops.features.Preprocessor.transform does."""
    body = infer_body(rows)
    columns, x = Encoder(FEATURES, PREPROCESSOR).encode(protocol.decode(json.dumps(body).encode()))
    raw = {k: [np.nan if v is None else v for v in vals] for k, vals in columns.items()}
    np.testing.assert_array_equal(x, PREPROCESSOR.transform(raw))


def _mutations():
    """Valid bodies with one tensor field replaced by arbitrary JSON."""
    return st.tuples(
        st.sampled_from(list(ROW)), st.sampled_from(["shape", "datatype", "data", "name"]), json_values
    )


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=bodies | _mutations().map(lambda m: _mutate(*m)))
def test_server_never_answers_5xx(server, body):
    resp = httpx.post(
        server.infer_url(), content=json.dumps(body), headers={"content-type": "application/json"}
    )
    assert resp.status_code in (200, 400), resp.text
    assert resp.json()


def _mutate(name, field, value):
    body = infer_body([ROW])
    for t in body["inputs"]:
        if t["name"] == name:
            t[field] = value
    return body


def test_schemathesis_finds_no_server_error(server, tmp_path):
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "schemathesis.cli",
            "run",
            f"{server.url}/openapi.json",
            "--checks",
            "not_a_server_error,content_type_conformance",
            "--max-examples",
            "40",
            "--seed",
            "1",
            "--phases",
            "examples,coverage,fuzzing",
            # One worker: with two, hypothesis parses lambda sources in two threads at once and
            # CPython 3.11.7's ast.parse is not thread-safe ("AST constructor recursion depth
            # mismatch", cpython gh-106905), an intermittent runtime error unrelated to the server.
            "--workers",
            "1",
            "--no-color",
            "--report",
            "junit",
            "--report-dir",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stdout[-5000:] + result.stderr[-2000:]
    assert "passed" in result.stdout
    metrics = server.metrics()
    assert 'status="500"' not in metrics
