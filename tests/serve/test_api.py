"""The served API contract: OIP endpoints, answers equal to the in-process model, 4xx naming the field,
/metrics, the prediction log, and start-up refusals (missing model: exit 5, altered weights: exit 6)."""

from __future__ import annotations

import copy
import gzip
import json
import math
import re
import shutil
import struct
import subprocess
import sys
import time
import zlib
from concurrent.futures import ThreadPoolExecutor

import httpx
import jsonschema_rs
import numpy as np
import pytest

from mlops import scorer

from .serve_helpers import ModelSpec, binary_request, infer_body, pack, unpack_response

pytestmark = pytest.mark.slow


def spec_validator(spec: dict, name: str):
    """A validator for one schema of the OIP spec (its $refs resolved against the whole document)."""
    schema = {**copy.deepcopy(spec["components"]["schemas"][name]), "components": spec["components"]}
    return jsonschema_rs.Draft4Validator(schema)


def post(server, body, content_type="application/json", url=None, headers=None):
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    sent = {} if content_type is None else {"content-type": content_type}
    return httpx.post(url or server.infer_url(), content=data, headers={**sent, **(headers or {})})


def some_rows(rows: list[dict], n: int) -> list[dict]:
    """n real rows, including one with a missing value when the test split has one."""
    with_missing = [r for r in rows if None in r.values()][:1]
    return with_missing + rows[: n - len(with_missing)]


def test_health_and_metadata(server, spec):
    assert httpx.get(f"{server.url}/v2/health/live").json() == {"live": True}
    assert httpx.get(f"{server.url}/v2/health/ready").json() == {"ready": True}
    ready = httpx.get(f"{server.url}/v2/models/{spec.name}/ready").json()
    assert ready == {"name": spec.name, "ready": True}
    got = httpx.get(f"{server.url}/v2/models/{spec.name}").json()
    assert [i["name"] for i in got["inputs"]] == spec.names
    assert [i["datatype"] for i in got["inputs"]] == [f["dtype"] for f in spec.features]
    assert got["versions"] == [spec.version]
    assert got["parameters"]["classes"] == spec.classes
    server_meta = httpx.get(f"{server.url}/v2").json()
    assert "binary_tensor_data" in server_meta["extensions"]
    versioned = httpx.get(f"{server.url}/v2/models/{spec.name}/versions/{spec.version}/ready")
    assert versioned.status_code == 200


def test_infer_matches_in_process_model(server, model_dir, spec, rows):
    chosen = some_rows(rows, 5)
    resp = post(server, infer_body(spec, chosen, request_id="req-7"))
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["id"] == "req-7" and body["model_name"] == spec.name
    out = {o["name"]: o for o in body["outputs"]}
    loaded = scorer.load_onnx(model_dir)
    columns = {k: [np.nan if r[k] is None else r[k] for r in chosen] for k in spec.names}
    expected = loaded.predict_proba(columns)
    assert out["probability"]["shape"] == [5] and out["probability"]["datatype"] == "FP64"
    np.testing.assert_allclose(out["probability"]["data"], expected, rtol=1e-6)
    assert out["label"]["data"] == loaded.predict_label(expected)


def test_responses_conform_to_the_oip_spec(server, spec, rows, oip_spec):
    """Conformance to the published OIP REST spec (the only tests that read it)."""
    spec_validator(oip_spec, "metadata_model_response").validate(
        httpx.get(f"{server.url}/v2/models/{spec.name}").json()
    )
    spec_validator(oip_spec, "metadata_server_response").validate(httpx.get(f"{server.url}/v2").json())
    complete = [r for r in rows if None not in r.values()][:3]  # null (a missing value) is our extension
    request = infer_body(spec, complete, request_id="conform-1")
    spec_validator(oip_spec, "inference_request").validate(request)  # the tests speak the protocol too
    resp = post(server, request)
    assert resp.status_code == 200, resp.text
    spec_validator(oip_spec, "inference_response").validate(resp.json())
    # the spec's own example requests name tensors this model does not have: a 400 in the spec's error shape
    examples = oip_spec["components"]["schemas"]["inference_request"].get("x-examples", {})
    for example in examples.values():
        if "inputs" in example:
            bad = post(server, example)
            assert bad.status_code == 400, bad.text
            spec_validator(oip_spec, "inference_error_response").validate(bad.json())
    model_error = httpx.get(f"{server.url}/v2/models/no-such-model")
    assert model_error.status_code == 404
    spec_validator(oip_spec, "metadata_model_error_response").validate(model_error.json())


def test_shape_n_by_1_nested_data_and_output_selection(server, spec, rows):
    body = infer_body(spec, rows[:2])
    for tensor in body["inputs"]:
        tensor["shape"] = [2, 1]
        tensor["data"] = [[v] for v in tensor["data"]]
    body["outputs"] = [{"name": "label"}]
    resp = post(server, body)
    assert resp.status_code == 200, resp.text
    assert [o["name"] for o in resp.json()["outputs"]] == ["label"]
    assert set(resp.json()["outputs"][0]["data"]) <= set(spec.classes)


def invalid_cases(spec: ModelSpec, row: dict) -> list[tuple[str, dict, str, str]]:
    """(case, request body, field the error must name, words it must contain) for every validation rule
    that applies to the served model's features (derived from its model.json, not from a demo row)."""

    def mutate(name: str, **changes) -> dict:
        body = infer_body(spec, [row])
        for tensor in body["inputs"]:
            if tensor["name"] == name:
                tensor.update(changes)
        return body

    cases: list[tuple[str, dict, str, str]] = []
    for f in spec.of_kind("categorical")[:1]:
        cases.append(
            (
                "unknown category",
                mutate(f["name"], data=["<no such category>"]),
                f["name"],
                "unknown category",
            )
        )
        if not f["nullable"]:
            cases.append(("null category", mutate(f["name"], data=[None]), f["name"], "null not allowed"))
        cases.append(
            ("category as number", mutate(f["name"], datatype="INT64", data=[1]), f["name"], "datatype")
        )
    for f in spec.of_kind("numeric", "INT64")[:1]:
        cases.append(
            ("integer as BYTES", mutate(f["name"], datatype="BYTES", data=["12"]), f["name"], "datatype")
        )
        cases.append(
            ("integer as FP64", mutate(f["name"], datatype="FP64", data=[1.5]), f["name"], "datatype")
        )
        cases.append(("float in INT64", mutate(f["name"], data=[1.5]), f["name"], "expected integers"))
    for f in spec.of_kind("numeric", "FP64")[:1]:
        cases.append(("string for number", mutate(f["name"], data=["70"]), f["name"], "expected numbers"))
        cases.append(("bool for number", mutate(f["name"], data=[True]), f["name"], "expected numbers"))
    for f in spec.of_kind("numeric"):
        name = f["name"]
        if f["min"] is not None:
            low = int(f["min"]) - 1 if f["dtype"] == "INT64" else f["min"] - 0.5
            cases.append((f"below min ({name})", mutate(name, data=[low]), name, "outside"))
        if f["max"] is not None:
            high = int(f["max"]) + 1 if f["dtype"] == "INT64" else f["max"] + 0.5
            cases.append((f"above max ({name})", mutate(name, data=[high]), name, "outside"))
    for f in [f for f in spec.of_kind("numeric") if not f["nullable"]][:1]:
        cases.append(("null in non-nullable", mutate(f["name"], data=[None]), f["name"], "null not allowed"))
    first, last = spec.names[0], spec.names[-1]
    without = infer_body(spec, [row])
    without["inputs"] = [t for t in without["inputs"] if t["name"] != last]
    extra = infer_body(spec, [row])
    extra["inputs"].append({"name": "x-no-such-input", "shape": [1], "datatype": "BYTES", "data": ["leo"]})
    no_data = mutate(first)
    no_data["inputs"][0].pop("data")
    binary_without_header = mutate(first)
    binary_without_header["inputs"][0]["parameters"] = {"binary_data_size": 8}
    cases += [
        ("shape mismatch", mutate(first, shape=[2]), first, "do not match shape"),
        ("shape [1, 2]", mutate(first, shape=[1, 2]), first, "shape"),
        ("empty shape [0]", mutate(first, shape=[0], data=[]), first, "shape"),
        ("missing input", without, last, "missing"),
        ("unknown input", extra, "x-no-such-input", "unknown input"),
        ("inputs not an array", {"inputs": "nope"}, "$.inputs", "Expected `array`"),
        ("tensor without shape", {"inputs": [{"name": first}]}, "shape", "missing required field"),
        ("tensor without data", no_data, first, "missing `data`"),
        ("binary size without header", binary_without_header, first, "binary tensor data extension"),
        (
            "unknown output",
            {**infer_body(spec, [row]), "outputs": [{"name": "logits"}]},
            "logits",
            "unknown output",
        ),
        (
            "binary_data_output not a bool",
            {**infer_body(spec, [row]), "parameters": {"binary_data_output": "yes"}},
            "parameters.binary_data_output",
            "true or false",
        ),
        (
            "binary_data not a bool",
            {**infer_body(spec, [row]), "outputs": [{"name": "label", "parameters": {"binary_data": 1}}]},
            "parameters.binary_data",
            "true or false",
        ),
    ]
    return cases


def test_invalid_input_is_400_naming_the_field(server, spec, rows):
    failures = []
    cases = invalid_cases(spec, rows[0])
    for case, body, field, words in cases:
        resp = post(server, body)
        error = resp.json().get("error", "") if resp.status_code == 400 else resp.text
        if resp.status_code != 400 or field not in error or words not in error:
            failures.append(f"{case}: {resp.status_code} {error}")
    assert not failures, "\n".join(failures)
    assert len(cases) >= 12


def test_invalid_input_is_400_naming_the_field_in_binary_mode(server, spec, rows):
    """The same rules and messages when the tensors travel as raw bytes (binary tensor data extension)."""
    failures, sent = [], 0
    # cases whose fault does not survive packing (True packs as 1.0; packing sets data and its size)
    lost = {"bool for number", "binary size without header", "tensor without data"}
    for case, body, field, words in invalid_cases(spec, rows[0]):
        if case in lost:
            continue
        try:
            content, headers = binary_request(body)
        except (TypeError, KeyError, AttributeError, struct.error):
            continue  # not expressible in bytes (a string for an FP64 tensor, a malformed tensor...)
        sent += 1
        resp = post(server, content, content_type=None, headers=headers)
        error = resp.json().get("error", "") if resp.status_code == 400 else resp.text
        if resp.status_code != 400 or field not in error or words not in error:
            failures.append(f"{case}: {resp.status_code} {error}")
    assert not failures, "\n".join(failures)
    assert sent >= 8


def test_rows_must_agree_across_inputs(server, spec, rows):
    body = infer_body(spec, rows[:1])
    body["inputs"][0].update(shape=[2], data=body["inputs"][0]["data"] * 2)
    resp = post(server, body)
    assert resp.status_code == 400 and "rows" in resp.json()["error"]


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("POST", "/v2/models/other-model/infer", 404),
        ("POST", "/v2/models/{name}/versions/0000/infer", 404),
        ("GET", "/v2/models/{name}/infer", 405),
        ("POST", "/v2/health/live", 405),
        ("GET", "/nowhere", 404),
    ],
)
def test_routing_errors(server, spec, rows, method, path, status):
    resp = httpx.request(
        method,
        server.url + path.format(name=spec.name),
        content=json.dumps(infer_body(spec, rows[:1])),
        headers={"content-type": "application/json"},
    )
    assert resp.status_code == status
    assert "error" in resp.json()


def test_content_types_the_reference_servers_accept(server, spec, rows):
    """Triton's client sends no Content-Type, KServe's sends application/octet-stream with binary data,
    curl -d sends application/x-www-form-urlencoded; JSON may carry parameters (charset)."""
    body = infer_body(spec, rows[:2])
    for content_type in (
        None,
        "application/json",
        "application/json; charset=utf-8",
        "Application/JSON;charset=UTF-8",
        "application/x-www-form-urlencoded",
    ):
        resp = post(server, body, content_type=content_type)
        assert resp.status_code == 200, (content_type, resp.text)
    content, headers = binary_request(body)
    for content_type in (None, "application/octet-stream", "application/json"):
        resp = post(server, content, content_type=content_type, headers=headers)
        assert resp.status_code == 200, (content_type, resp.text)
    resp = post(server, body, content_type="text/plain")
    assert resp.status_code == 415 and "content-type" in resp.json()["error"]


def test_compressed_bodies(server, spec, rows):
    body = json.dumps(infer_body(spec, rows[:3])).encode()
    plain = post(server, body).json()
    for encoding, data in (("gzip", gzip.compress(body)), ("deflate", zlib.compress(body))):
        resp = post(server, data, headers={"content-encoding": encoding})
        assert resp.status_code == 200, resp.text
        assert resp.json()["outputs"] == plain["outputs"]
    assert post(server, b"not gzip", headers={"content-encoding": "gzip"}).status_code == 400
    bomb = gzip.compress(b" " * 10_000_000)  # 10 MB of spaces in ~10 kB: over serve.max_body_bytes inflated
    assert post(server, bomb, headers={"content-encoding": "gzip"}).status_code == 413
    assert post(server, body, headers={"content-encoding": "br"}).status_code == 415


def test_binary_requests_and_responses_match_json(server, spec, rows):
    chosen = some_rows(rows, 6)
    body = infer_body(spec, chosen, request_id="bin-1")
    expected = post(server, body).json()["outputs"]
    categorical = {f["name"] for f in spec.of_kind("categorical")}
    for inputs in (None, categorical, set(spec.names) - categorical):  # all, BYTES only, numbers only
        content, headers = binary_request(body, inputs)
        resp = post(server, content, content_type="application/octet-stream", headers=headers)
        assert resp.status_code == 200, resp.text
        assert "inference-header-content-length" not in resp.headers  # no binary output asked for
        assert resp.json()["outputs"] == expected
    # binary outputs: all (binary_data_output), or per output (binary_data wins over the request default)
    for parameters, outputs, binary_names in (
        ({"binary_data_output": True}, None, {"probability", "label"}),
        (None, [{"name": "label", "parameters": {"binary_data": True}}, {"name": "probability"}], {"label"}),
        (
            {"binary_data_output": True},
            [{"name": "probability"}, {"name": "label", "parameters": {"binary_data": False}}],
            {"probability"},
        ),
    ):
        asked = {
            **body,
            **({"parameters": parameters} if parameters else {}),
            **({"outputs": outputs} if outputs else {}),
        }
        resp = post(server, asked)
        assert resp.status_code == 200, resp.text
        assert resp.headers["content-type"] == "application/octet-stream"
        header = json.loads(resp.content[: int(resp.headers["inference-header-content-length"])])
        assert {
            o["name"] for o in header["outputs"] if "binary_data_size" in o.get("parameters", {})
        } == binary_names
        assert all(("data" in o) != (o["name"] in binary_names) for o in header["outputs"])
        got = {o["name"]: o for o in unpack_response(resp.content, resp.headers)["outputs"]}
        for out in expected:
            if out["name"] in got:
                assert got[out["name"]]["data"] == out["data"]
                assert got[out["name"]]["shape"] == out["shape"] == [len(chosen)]


def _binary_case(spec, row, change):
    """A binary request for one row, changed by `change(header_dict, chunks)` before it is assembled."""
    body = infer_body(spec, [row])
    chunks = {}
    for tensor in body["inputs"]:
        data = pack(tensor["datatype"], tensor.pop("data"))
        tensor["parameters"] = {"binary_data_size": len(data)}
        chunks[tensor["name"]] = data
    length = change(body, chunks)
    header = json.dumps(body).encode()
    content = header + b"".join(chunks[t["name"]] for t in body["inputs"] if "data" not in t)
    return content, {"Inference-Header-Content-Length": str(len(header) if length is None else length)}


def test_binary_extension_errors_are_400_naming_the_field(server, spec, rows):
    row = rows[0]
    cat = spec.of_kind("categorical")[0]["name"] if spec.of_kind("categorical") else None
    integer = spec.of_kind("numeric", "INT64")[0]["name"] if spec.of_kind("numeric", "INT64") else None
    floats = [f["name"] for f in spec.of_kind("numeric", "FP64") if not f["nullable"]]
    first = spec.names[0]

    def resize(name, size):
        def change(body, chunks):
            next(t for t in body["inputs"] if t["name"] == name)["parameters"]["binary_data_size"] = size

        return change

    def trailing(body, chunks):
        chunks[spec.names[-1]] += b"\x00" * 8  # its binary_data_size still counts the true bytes

    def replace(name, data, size=None):
        def change(body, chunks):
            chunks[name] = data
            next(t for t in body["inputs"] if t["name"] == name)["parameters"]["binary_data_size"] = (
                len(data) if size is None else size
            )

        return change

    cases = [
        ("header length past the end", lambda b, c: 10**9, "Inference-Header-Content-Length", "more than"),
        ("header length not a number", lambda b, c: "12a", "Inference-Header-Content-Length", "byte count"),
        ("header length negative", lambda b, c: -5, "Inference-Header-Content-Length", "byte count"),
        ("header length cuts the JSON", lambda b, c: 10, "malformed JSON", "truncated"),
        ("bytes left over", trailing, "Inference-Header-Content-Length", "belong to no input"),
        ("size past the end", resize(spec.names[-1], 10**6), spec.names[-1], "runs past the end"),
        ("size not a number", resize(first, "8"), first, "binary_data_size"),
        ("size negative", resize(first, -8), first, "binary_data_size"),
    ]
    if integer:
        cases += [
            ("7 bytes of INT64", replace(integer, b"\x01" * 7), integer, "whole number"),
            ("out of range in binary", replace(integer, pack("INT64", [10**12])), integer, "outside"),
            (
                "two rows in a one-row shape",
                replace(integer, pack("INT64", [1, 2])),
                integer,
                "do not match shape",
            ),
        ]
    if cat:
        cases += [
            ("truncated BYTES length", replace(cat, b"\x05\x00"), cat, "truncated"),
            ("BYTES length past the end", replace(cat, b"\x09\x00\x00\x00abc"), cat, "declares 9 bytes"),
            ("invalid UTF-8 in BYTES", replace(cat, pack("BYTES", [b"\xff\xfe"])), cat, "UTF-8"),
            (
                "unknown category in binary",
                replace(cat, pack("BYTES", ["<no such category>"])),
                cat,
                "unknown category",
            ),
        ]
    for name in floats[:1]:
        cases += [
            ("infinity", replace(name, pack("FP64", [math.inf])), name, "finite"),
            (
                "NaN in a non-nullable feature",
                replace(name, pack("FP64", [math.nan])),
                name,
                "null not allowed",
            ),
        ]

    def both(body, chunks):
        tensor = next(t for t in body["inputs"] if t["name"] == first)
        tensor["data"] = [row[first]]
        chunks.pop(first)

    def both_data_and_size(body, chunks):
        both(body, chunks)
        next(t for t in body["inputs"] if t["name"] == first)["parameters"]["binary_data_size"] = 0

    cases.append(("data and binary_data_size", both_data_and_size, first, "both"))
    failures = []
    for case, change, field, words in cases:
        content, headers = _binary_case(spec, row, change)
        resp = post(server, content, content_type=None, headers=headers)
        error = resp.json().get("error", "") if resp.status_code == 400 else resp.text
        if resp.status_code != 400 or field not in error or words not in error:
            failures.append(f"{case}: {resp.status_code} {error}")
    assert not failures, "\n".join(failures)


def test_nan_in_binary_is_a_missing_value_for_nullable_features(server, model_dir, spec, rows):
    """NaN in a binary FP64 tensor means what JSON null means (missing); the model's answer is the same."""
    nullable = [f["name"] for f in spec.of_kind("numeric") if f["nullable"] and f["dtype"] == "FP64"]
    row = {**rows[0], **{name: None for name in nullable}}
    json_answer = post(server, infer_body(spec, [row])).json()["outputs"]
    content, headers = binary_request(infer_body(spec, [row]))
    binary_answer = post(server, content, content_type=None, headers=headers)
    assert binary_answer.status_code == 200, binary_answer.text
    assert binary_answer.json()["outputs"] == json_answer


def test_malformed_bodies_are_4xx_never_500(server, spec, rows):
    bad = post(server, b'{"inputs": [')
    assert bad.status_code == 400 and "malformed JSON" in bad.json()["error"]
    assert post(server, b"\xff\xfe").status_code == 400
    big = post(server, b'{"inputs": [' + b" " * 70000 + b"]}")
    assert big.status_code == 413 and "serve.max_body_bytes" in big.json()["error"]
    chunked = httpx.post(
        server.infer_url(),
        content=iter([b"[" * 40000, b"]" * 40000]),
        headers={"content-type": "application/json"},
    )
    assert chunked.status_code == 413
    first = spec.names[0]
    deep = b'{"inputs": [{"name": "%s", "shape": [1], "datatype": "BYTES", "data": %s%s}]}' % (
        first.encode(),
        b"[" * 1000,
        b"]" * 1000,
    )
    assert len(deep) < 2200
    resp = post(server, deep)
    assert resp.status_code == 400 and "nested too deeply" in resp.json()["error"], resp.text
    assert post(server, b'{"a":' * 1000 + b"1" + b"}" * 1000).status_code == 400
    body = json.dumps(infer_body(spec, rows[:1])).encode()
    for invalid in (b"\xff\xfe", b"\xc0\xaf", b"\xed\xa0\x80", b"abc\x80"):  # bad start, overlong, surrogate
        broken = body.replace(b'"id"', b'"id"').replace(f'"{first}"'.encode(), b'"' + invalid + b'"', 1)
        resp = post(server, broken)
        assert resp.status_code == 400 and "UTF-8" in resp.json()["error"], (invalid, resp.text)
    with_id = json.dumps({**infer_body(spec, rows[:1]), "id": "x"}).encode().replace(b'"x"', b'"\xff"')
    assert post(server, with_id).status_code == 400
    assert "Traceback" not in server.log.read_text()


def test_many_concurrent_clients_get_correct_answers(server, model_dir, spec, rows):
    loaded = scorer.load_onnx(model_dir)
    rows = rows[:48]
    expected = loaded.predict_proba({k: [np.nan if r[k] is None else r[k] for r in rows] for k in spec.names})

    def client(i: int) -> list[tuple[int, int, float]]:
        out = []
        with httpx.Client() as c:
            for j in range(20):
                k = (i * 20 + j) % len(rows)
                r = c.post(server.infer_url(), json=infer_body(spec, [rows[k]]))
                p = r.json()["outputs"][0]["data"][0] if r.status_code == 200 else -1
                out.append((r.status_code, k, p))
        return out

    with ThreadPoolExecutor(32) as pool:
        results = [x for chunk in pool.map(client, range(32)) for x in chunk]
    assert len(results) == 640
    assert {status for status, _, _ in results} == {200}
    for _, k, p in results:
        assert p == pytest.approx(expected[k], rel=1e-6)
    batches = re.search(r"^mlops_serve_batch_rows_count (\S+)$", server.metrics(), re.M)
    assert batches and float(batches.group(1)) > 0


def _sample(text: str, name: str, **labels: str) -> float:
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            got = dict(re.findall(r'(\w+)="([^"]*)"', line.split(" ")[0]))
            if all(got.get(k) == v for k, v in labels.items()):
                return float(line.rsplit(" ", 1)[1])
    raise AssertionError(f"{name}{labels} not in /metrics")


def test_metrics(server, spec, rows):
    version = spec.version
    before = server.metrics()
    ok_before = _sample(before, "mlops_serve_requests_total", route="/v2/models/{name}/infer", status="200")
    for _ in range(4):
        assert post(server, infer_body(spec, rows[:2])).status_code == 200
    assert post(server, {"inputs": []}).status_code == 400
    text = server.metrics()
    infer = "/v2/models/{name}/infer"
    ok = _sample(text, "mlops_serve_requests_total", route=infer, status="200", method="POST")
    assert ok == ok_before + 4
    assert _sample(text, "mlops_serve_requests_total", route=infer, status="400") >= 1
    assert _sample(text, "mlops_serve_request_duration_seconds_count", route=infer) >= ok_before + 5
    assert _sample(text, "mlops_serve_request_duration_seconds_bucket", route=infer, le="+Inf") >= 5
    assert _sample(text, "mlops_serve_batch_rows_sum") >= 8
    total = sum(
        _sample(text, "mlops_serve_predictions_total", **{"class": c})
        for c in spec.classes
        if f'class="{c}"' in text
    )
    assert total >= 8
    assert _sample(text, "mlops_serve_model_info", model=spec.name, version=version) == 1


def test_prediction_log_records_inputs_outputs_and_version(server, spec, rows):
    resp = post(server, infer_body(spec, rows[:2], request_id="logged-1"))
    assert resp.status_code == 200
    deadline = time.monotonic() + 10
    records = []
    while time.monotonic() < deadline and len(records) < 2:
        time.sleep(0.2)
        records = [
            json.loads(line)
            for f in sorted((server.root / "predictions").glob("*.jsonl"))
            for line in f.read_text().splitlines()
            if '"logged-1"' in line
        ]
    assert len(records) == 2
    first = records[0]
    assert set(first) == {"ts", "model", "model_version", "request_id", "inputs", "probability", "label"}
    assert [r["inputs"] for r in records] == rows[:2]
    assert first["model"] == spec.name and first["model_version"] == spec.version
    assert first["label"] in spec.classes
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z", first["ts"])
    assert _sample(server.metrics(), "mlops_serve_prediction_log_records_total", outcome="written") >= 2


def test_openapi_document_is_published(server):
    doc = httpx.get(f"{server.url}/openapi.json").json()
    assert "/v2/models/{model_name}/infer" in doc["paths"]


def _serve_once(args: list[str], cwd) -> subprocess.CompletedProcess:
    from .serve_helpers import FIXTURE_PARAMS

    return subprocess.run(
        [sys.executable, "-m", "mlops.cli", "--params", str(FIXTURE_PARAMS), "serve", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_missing_or_altered_model_is_refused_before_listening(model_dir, tmp_path):
    missing = _serve_once(["--model-dir", str(tmp_path / "nothing"), "--port", "1"], tmp_path)
    assert missing.returncode == 5 and "model.json" in missing.stderr
    altered = tmp_path / "altered"
    shutil.copytree(model_dir, altered)
    weights = altered / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[:-1] + b"\x00")
    result = _serve_once(["--model-dir", str(altered), "--port", "1"], tmp_path)
    assert result.returncode == 6 and "sha256" in result.stderr


def test_port_in_use_is_a_usage_error(server, model_dir, tmp_path):
    result = _serve_once(["--model-dir", str(model_dir), "--port", str(server.port)], tmp_path)
    assert result.returncode == 2 and f"--port {server.port}" in result.stderr


def test_websocket_upgrade_is_an_ordinary_request(server):
    """The API has no websocket route and the workers load no websocket protocol: an upgrade request is
    answered as plain HTTP (the route's answer, or 404), never a 5xx or a switched protocol."""
    upgrade = {
        "connection": "Upgrade",
        "upgrade": "websocket",
        "sec-websocket-version": "13",
        "sec-websocket-key": "dGhlIHNhbXBsZSBub25jZQ==",
    }
    assert httpx.get(f"{server.url}/v2/health/live", headers=upgrade).status_code == 200
    assert httpx.get(f"{server.url}/ws", headers=upgrade).status_code == 404
