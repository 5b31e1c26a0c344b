"""The served API contract: OIP endpoints, answers equal to the in-process model, 4xx naming the field,
/metrics, the prediction log, and start-up refusals (missing model: exit 5, altered weights: exit 6)."""

from __future__ import annotations

import copy
import json
import re
import shutil
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import jsonschema_rs
import numpy as np
import pytest

from mlops import model as model_mod

from .serve_helpers import ROW, infer_body

pytestmark = pytest.mark.slow


def spec_validator(spec: dict, name: str):
    """A validator for one schema of the OIP spec (its $refs resolved against the whole document)."""
    schema = {**copy.deepcopy(spec["components"]["schemas"][name]), "components": spec["components"]}
    return jsonschema_rs.Draft4Validator(schema)


def post(server, body, content_type="application/json", url=None):
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    return httpx.post(url or server.infer_url(), content=data, headers={"content-type": content_type})


def test_health_and_metadata(server, model_dir, oip_spec):
    meta = json.loads((model_dir / "model.json").read_text())
    assert httpx.get(f"{server.url}/v2/health/live").json() == {"live": True}
    assert httpx.get(f"{server.url}/v2/health/ready").json() == {"ready": True}
    assert httpx.get(f"{server.url}/v2/models/churn-mlp/ready").json() == {"name": "churn-mlp", "ready": True}
    got = httpx.get(f"{server.url}/v2/models/churn-mlp").json()
    spec_validator(oip_spec, "metadata_model_response").validate(got)
    assert [i["name"] for i in got["inputs"]] == [f["name"] for f in meta["features"]]
    assert got["versions"] == [meta["weights"]["sha256"][:12]]
    server_meta = httpx.get(f"{server.url}/v2").json()
    spec_validator(oip_spec, "metadata_server_response").validate(server_meta)
    versioned = httpx.get(f"{server.url}/v2/models/churn-mlp/versions/{got['versions'][0]}/ready")
    assert versioned.status_code == 200


def test_infer_matches_in_process_model(server, model_dir, oip_spec):
    rows = [
        ROW,
        {**ROW, "tenure": 60, "contract": "Two year", "total_charges": None},
        {**ROW, "internet_service": "No", "monthly_charges": 20.0},
    ]
    resp = post(server, infer_body(rows, request_id="req-7"))
    assert resp.status_code == 200, resp.text
    body = resp.json()
    spec_validator(oip_spec, "inference_response").validate(body)
    assert body["id"] == "req-7" and body["model_name"] == "churn-mlp"
    out = {o["name"]: o for o in body["outputs"]}
    loaded = model_mod.load(model_dir)
    columns = {k: [np.nan if r[k] is None else r[k] for r in rows] for k in ROW}
    expected = loaded.predict_proba(columns)
    assert out["probability"]["shape"] == [3] and out["probability"]["datatype"] == "FP64"
    np.testing.assert_allclose(out["probability"]["data"], expected, rtol=1e-6)
    assert out["label"]["data"] == loaded.predict_label(expected)


def test_shape_n_by_1_nested_data_and_output_selection(server):
    body = infer_body([ROW, ROW])
    for tensor in body["inputs"]:
        tensor["shape"] = [2, 1]
        tensor["data"] = [[v] for v in tensor["data"]]
    body["outputs"] = [{"name": "label"}]
    resp = post(server, body)
    assert resp.status_code == 200, resp.text
    assert [o["name"] for o in resp.json()["outputs"]] == ["label"]


def _mutate(field: str, **changes):
    body = infer_body([ROW])
    for tensor in body["inputs"]:
        if tensor["name"] == field:
            tensor.update(changes)
    return body


def _without(field: str):
    body = infer_body([ROW])
    body["inputs"] = [t for t in body["inputs"] if t["name"] != field]
    return body


def _with_extra():
    body = infer_body([ROW])
    body["inputs"].append({"name": "zodiac", "shape": [1], "datatype": "BYTES", "data": ["leo"]})
    return body


@pytest.mark.parametrize(
    ("body", "field", "words"),
    [
        (_mutate("contract", data=["Three year"]), "contract", "unknown category"),
        (_mutate("tenure", datatype="BYTES", data=["12"]), "tenure", "datatype"),
        (_mutate("tenure", data=[1.5], datatype="FP64"), "tenure", "datatype"),
        (_mutate("monthly_charges", data=["70"]), "monthly_charges", "expected numbers"),
        (_mutate("monthly_charges", data=[True]), "monthly_charges", "expected numbers"),
        (_mutate("tenure", shape=[2]), "tenure", "do not match shape"),
        (_mutate("tenure", shape=[1, 2]), "tenure", "shape"),
        (_mutate("tenure", shape=[0], data=[]), "tenure", "shape"),
        (_mutate("tenure", data=[-3]), "tenure", "outside"),
        (_mutate("partner", data=[None]), "partner", "null not allowed"),
        (_mutate("contract", data=[None]), "contract", "unknown category"),
        (_without("payment_method"), "payment_method", "missing"),
        (_with_extra(), "zodiac", "unknown input"),
        ({"inputs": "nope"}, "$.inputs", "Expected `array`"),
        ({"inputs": [{"name": "tenure"}]}, "shape", "missing required field"),
        ({**infer_body([ROW]), "outputs": [{"name": "logits"}]}, "logits", "unknown output"),
    ],
)
def test_invalid_input_is_400_naming_the_field(server, body, field, words):
    resp = post(server, body)
    assert resp.status_code == 400, resp.text
    error = resp.json()["error"]
    assert field in error and words in error, error


def test_rows_must_agree_across_inputs(server):
    body = _mutate("tenure", shape=[2], data=[1, 2])
    resp = post(server, body)
    assert resp.status_code == 400 and "rows" in resp.json()["error"]


@pytest.mark.parametrize(
    ("method", "path", "status"),
    [
        ("POST", "/v2/models/other-model/infer", 404),
        ("POST", "/v2/models/churn-mlp/versions/0000/infer", 404),
        ("GET", "/v2/models/churn-mlp/infer", 405),
        ("POST", "/v2/health/live", 405),
        ("GET", "/nowhere", 404),
    ],
)
def test_routing_errors(server, method, path, status):
    resp = httpx.request(
        method,
        server.url + path,
        content=json.dumps(infer_body([ROW])),
        headers={"content-type": "application/json"},
    )
    assert resp.status_code == status
    assert "error" in resp.json()


def test_malformed_json_oversized_body_and_content_type_are_4xx(server):
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
    assert post(server, infer_body([ROW]), content_type="text/plain").status_code == 415
    resp = httpx.post(server.infer_url(), content=json.dumps(infer_body([ROW])))
    assert resp.status_code == 415
    assert post(server, infer_body([ROW]), content_type="application/json; charset=utf-8").status_code == 200


def test_many_concurrent_clients_get_correct_answers(server, model_dir):
    loaded = model_mod.load(model_dir)
    rows = [{**ROW, "tenure": t, "monthly_charges": 20.0 + t} for t in range(48)]
    expected = loaded.predict_proba({k: [r[k] for r in rows] for k in ROW})

    def client(i: int) -> list[tuple[int, int, float]]:
        out = []
        with httpx.Client() as c:
            for j in range(20):
                k = (i * 20 + j) % len(rows)
                r = c.post(server.infer_url(), json=infer_body([rows[k]]))
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


def test_metrics(server, model_dir):
    version = json.loads((model_dir / "model.json").read_text())["weights"]["sha256"][:12]
    before = server.metrics()
    ok_before = _sample(before, "mlops_serve_requests_total", route="/v2/models/{name}/infer", status="200")
    for _ in range(4):
        assert post(server, infer_body([ROW, ROW])).status_code == 200
    assert post(server, _mutate("contract", data=["x"])).status_code == 400
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
        for c in ("Yes", "No")
        if f'class="{c}"' in text
    )
    assert total >= 8
    assert _sample(text, "mlops_serve_model_info", model="churn-mlp", version=version) == 1


def test_prediction_log_records_inputs_outputs_and_version(server):
    resp = post(server, infer_body([ROW, {**ROW, "tenure": 3}], request_id="logged-1"))
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
    assert first["inputs"] == ROW and first["model"] == "churn-mlp" and first["label"] in ("Yes", "No")
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
