"""The request fast path against the reference path, on generated feature specs and requests.

`mlops.serve.fastpath` may only accept what the reference path (`binary.decode` + `Encoder.encode`)
accepts, and must then produce the same feature matrix and the same raw columns; everything else it
hands back (None) so that the reference path answers with its own error. It must also accept the
common request shape, or it would be no fast path at all. The response template and the deferred
metrics must produce the same bytes and the same exposition as the code they replace.
"""

from __future__ import annotations

import json
import math

import msgspec
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from mlops.errors import DataError
from mlops.serve import prometheus as metrics_mod
from mlops.serve import protocol
from mlops.serve.encoding import Encoder
from mlops.serve.fastpath import FastPath, columns

from .serve_helpers import infer_body
from .test_fuzz import any_number, feature_specs, json_values, preprocessor, spec_of, valid_value


def reference(features: list[dict], body: bytes):
    """(columns, matrix) from the reference path, or the DataError it raises."""
    from mlops.serve import binary

    try:
        request = binary.decode(body, None)
        return Encoder(features, preprocessor(features)).encode(request)
    except DataError as e:
        return e


def check_agrees(features: list[dict], body: bytes) -> bool:
    """The fast path agrees with the reference path on `body`; True when it accepted it."""
    fast = FastPath(features, preprocessor(features)).decode(body)
    ref = reference(features, body)
    if fast is None:
        return False
    assert not isinstance(ref, DataError), f"fast path accepted what the reference rejects: {ref}"
    request, _, x = fast
    ref_columns, ref_x = ref
    np.testing.assert_array_equal(x, ref_x)
    assert x.dtype == ref_x.dtype == np.float32
    assert json.dumps(columns(request)) == json.dumps(ref_columns)  # same values, same JSON types
    return True


# slow: 300 hypothesis examples, each parsed twice (~3-4 s)
@pytest.mark.slow
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_valid_requests_take_the_fast_path_with_the_reference_result(data):
    features = data.draw(feature_specs())
    rows = data.draw(
        st.lists(
            st.fixed_dictionaries({f["name"]: valid_value(f) for f in features}), min_size=1, max_size=40
        )
    )
    body = infer_body(spec_of(features), rows, request_id=data.draw(st.none() | st.text(max_size=5)))
    for tensor in body["inputs"]:
        if data.draw(st.booleans()):
            tensor["shape"] = [len(rows), 1]  # flat data with shape [n, 1] is valid too
    body["inputs"] = data.draw(st.permutations(body["inputs"]))
    if data.draw(st.booleans()):
        body["outputs"] = [{"name": n} for n in data.draw(st.lists(st.sampled_from(protocol.OUTPUTS)))]
    if not all(f["kind"] == "categorical" and not f["categories"] for f in features):
        assert check_agrees(features, json.dumps(body).encode()), "a valid request missed the fast path"


def _mutations(features: list[dict], body: dict):
    """One change to a valid body: any JSON in one field, another number, a dropped or doubled input."""
    names = [f["name"] for f in features]
    field = st.sampled_from(["name", "shape", "datatype", "data", "parameters"])

    def set_field(i: int, key: str, value):
        tensor = body["inputs"][i % len(body["inputs"])]
        tensor[key] = value
        return body

    def set_value(i: int, value):
        tensor = body["inputs"][i % len(body["inputs"])]
        tensor["data"] = [value, *tensor["data"][1:]]
        return body

    def drop_or_double(i: int, double: bool):
        tensor = body["inputs"][i % len(body["inputs"])]
        if double:
            body["inputs"].append(dict(tensor))
        else:
            body["inputs"].remove(tensor)
        return body

    index = st.integers(0, len(names) - 1)
    numbers = st.integers(-(2**70), 2**70) | st.floats() | st.sampled_from([True, None, "No", [1], -0.0])
    edges = [e for f in features for e in (f.get("min"), f.get("max")) if e is not None]
    if edges:  # just inside and just outside every bound, as integers and as floats
        near = [e + d for e in edges for d in (-1, 0, 1)]
        near += [float(v) for v in near] + [math.nextafter(float(e), s) for e in edges for s in (-1e9, 1e9)]
        numbers |= st.sampled_from(near)
    return (
        st.builds(set_field, index, field, json_values)
        | st.builds(set_value, index, numbers | json_values)
        | st.builds(drop_or_double, index, st.booleans())
        | st.builds(lambda v: {**body, "outputs": v}, json_values)
        | st.builds(lambda v: {**body, "id": v}, json_values)
        | st.builds(lambda v: {**body, "parameters": v}, json_values)
    )


# slow: 400 hypothesis examples (~8 s)
@pytest.mark.slow
@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_changed_requests_never_take_the_fast_path_to_another_result(data):
    features = data.draw(feature_specs())
    rows = data.draw(
        st.lists(st.fixed_dictionaries({f["name"]: valid_value(f) for f in features}), min_size=1, max_size=5)
    )
    body = data.draw(_mutations(features, infer_body(spec_of(features), rows)))
    check_agrees(features, json.dumps(body).encode())


# slow: hypothesis examples over every bound (~4 s)
@pytest.mark.slow
@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_values_at_and_beyond_each_bound_agree_with_the_reference(data):
    features = data.draw(feature_specs())
    row = data.draw(st.fixed_dictionaries({f["name"]: valid_value(f) for f in features}))
    for f in features:
        for edge in (f.get("min"), f.get("max")):
            if f["kind"] != "numeric" or edge is None:
                continue
            near = [edge + d for d in (-1, 0, 1)] + [edge - 0.5, edge + 0.5]
            near += [
                float(edge),
                math.nextafter(float(edge), -math.inf),
                math.nextafter(float(edge), math.inf),
            ]
            for value in near:
                body = infer_body(spec_of(features), [{**row, f["name"]: value}])
                accepted = check_agrees(features, json.dumps(body).encode())
                inside = f["min"] is None or value >= f["min"]
                inside = inside and (f["max"] is None or value <= f["max"])
                assert accepted == (inside and (f["dtype"] == "FP64" or type(value) is int))


# slow: 300 hypothesis examples (~2.5 s)
@pytest.mark.slow
@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.data())
def test_any_number_takes_the_fast_path_only_to_the_reference_result(data):
    features = data.draw(feature_specs())
    rows = data.draw(
        st.lists(st.fixed_dictionaries({f["name"]: any_number(f) for f in features}), min_size=1, max_size=5)
    )
    check_agrees(features, json.dumps(infer_body(spec_of(features), rows)).encode())


@pytest.mark.parametrize(
    "literal",
    [b"1e400", b"-1e400", b"123456789012345678901234567890", b"9223372036854775808", b"1" + b"0" * 400],
)
def test_numbers_beyond_float64_or_int64_take_the_reference_path(literal):
    features = [
        {"name": "a", "kind": "numeric", "dtype": "FP64", "min": None, "max": None, "nullable": False}
    ]
    body = json.dumps(infer_body(spec_of(features), [{"a": 1.5}])).encode().replace(b"1.5", literal)
    assert FastPath(features, preprocessor(features)).decode(body) is None or check_agrees(features, body)
    assert isinstance(reference(features, body), DataError) or check_agrees(features, body)


@settings(max_examples=200, deadline=None)
@given(
    request_id=st.none() | st.text(),
    proba=st.lists(st.floats(0, 1), min_size=1, max_size=20),
    name=st.text(min_size=1),
    version=st.text(min_size=1),
)
def test_response_template_writes_the_same_bytes(request_id, proba, name, version):
    labels = ["Yes" if p >= 0.5 else "No" for p in proba]
    expected, header = protocol.response(name, version, request_id, None, proba, labels)
    assert header is None
    assert protocol.ResponseTemplate(name, version).encode(request_id, proba, labels) == expected


def _samples(text: bytes) -> list[bytes]:
    names = (b"mlops_serve_requests_total", b"mlops_serve_request_duration", b"mlops_serve_batch_rows")
    names += (b"mlops_serve_predictions_total",)
    return [line for line in text.splitlines() if line.startswith(names) and b"_created" not in line]


@settings(max_examples=100, deadline=None)
@given(
    seconds=st.lists(
        st.floats(0, 20) | st.sampled_from(metrics_mod.LATENCY_BUCKETS), min_size=1, max_size=30
    ),
    batches=st.lists(st.integers(1, 3000) | st.sampled_from(metrics_mod.BATCH_BUCKETS), max_size=30),
    labels=st.lists(st.sampled_from(["Yes", "No"]), min_size=1, max_size=70),
)
def test_deferred_metrics_expose_what_direct_observations_do(seconds, batches, labels):
    m = metrics_mod.Metrics()
    pending: list = []
    m.call_soon = pending.append
    for s in seconds:
        m.observe("/infer", "POST", 200, s)
    for b in batches:
        m.observe_batch(b)
    m.predicted("m", "v", labels)
    assert len(pending) == 1  # one flush scheduled, however many observations
    got = m.exposition()[0]  # flushes first

    registry = CollectorRegistry()
    requests = Counter("mlops_serve_requests", "r", ["route", "method", "status"], registry=registry)
    latency = Histogram(
        "mlops_serve_request_duration_seconds",
        "l",
        ["route"],
        buckets=metrics_mod.LATENCY_BUCKETS,
        registry=registry,
    )
    rows = Histogram("mlops_serve_batch_rows", "b", buckets=metrics_mod.BATCH_BUCKETS, registry=registry)
    predictions = Counter("mlops_serve_predictions", "p", ["model", "version", "class"], registry=registry)
    for s in seconds:
        requests.labels("/infer", "POST", "200").inc()
        latency.labels("/infer").observe(s)
    for b in batches:
        rows.observe(b)
    for label in labels:
        predictions.labels("m", "v", label).inc()
    assert sorted(_samples(got)) == sorted(_samples(generate_latest(registry)))


def test_fast_structs_are_not_tracked_by_the_collector():
    features = [
        {"name": "a", "kind": "categorical", "dtype": "BYTES", "categories": ["x"], "nullable": False}
    ]
    decoded = FastPath(features, preprocessor(features))._decode(
        msgspec.json.encode(infer_body(spec_of(features), [{"a": "x"}]))
    )
    import gc

    assert not gc.is_tracked(decoded) and not gc.is_tracked(decoded.inputs[0])
