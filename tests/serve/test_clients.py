"""Third-party Open Inference Protocol clients infer against a real `mlops serve`, with their default
settings and in both JSON and binary (binary tensor data extension) modes: Triton's
`tritonclient.http` (in the project's environment) and the KServe SDK's `InferenceRESTClient` (in its
own virtualenv, see oip_clients/toolenv.py). Answers must equal the in-process model's."""

from __future__ import annotations

import json
import subprocess

import numpy as np
import pytest
import tritonclient.http as triton
from tritonclient.utils import InferenceServerException

from mlops import scorer

from .oip_clients.toolenv import HERE as CLIENTS
from .oip_clients.toolenv import kserve_python

pytestmark = pytest.mark.slow

NUMPY = {"BYTES": np.object_, "INT64": np.int64, "FP64": np.float64}


def expected(model_dir, spec, rows) -> tuple[np.ndarray, list[str]]:
    loaded = scorer.load_onnx(model_dir)
    proba = loaded.predict_proba({k: [np.nan if r[k] is None else r[k] for r in rows] for k in spec.names})
    return proba, loaded.predict_label(proba)


def triton_inputs(spec, rows, binary: bool) -> list[triton.InferInput]:
    inputs = []
    for feature in spec.features:
        values = [r[feature["name"]] for r in rows]
        if feature["dtype"] == "FP64":
            values = [np.nan if v is None else v for v in values]
        tensor = triton.InferInput(feature["name"], [len(values)], feature["dtype"])
        tensor.set_data_from_numpy(np.array(values, dtype=NUMPY[feature["dtype"]]), binary_data=binary)
        inputs.append(tensor)
    return inputs


def complete_rows(rows, n):
    """Rows without a missing value: a client's JSON mode writes NaN, which JSON cannot carry."""
    return [r for r in rows if None not in r.values()][:n]


def with_missing(rows, n):
    return ([r for r in rows if None in r.values()][:1] + rows)[:n]


@pytest.mark.parametrize("binary_inputs", [False, True], ids=["json-inputs", "binary-inputs"])
@pytest.mark.parametrize(
    "outputs", ["default", "json", "binary"], ids=["outputs-default", "outputs-json", "outputs-binary"]
)
def test_tritonclient(server, model_dir, spec, rows, binary_inputs, outputs):
    chosen = with_missing(rows, 6) if binary_inputs else complete_rows(rows, 6)
    proba, labels = expected(model_dir, spec, chosen)
    client = triton.InferenceServerClient(url=f"127.0.0.1:{server.port}")
    assert client.is_server_live() and client.is_server_ready() and client.is_model_ready(spec.name)
    assert [i["name"] for i in client.get_model_metadata(spec.name)["inputs"]] == spec.names
    wanted = None  # the client's default: asks for every output in binary (binary_data_output)
    if outputs != "default":
        wanted = [
            triton.InferRequestedOutput(n, binary_data=outputs == "binary") for n in ("probability", "label")
        ]
    result = client.infer(
        spec.name, triton_inputs(spec, chosen, binary_inputs), outputs=wanted, request_id="t-1"
    )
    np.testing.assert_allclose(result.as_numpy("probability"), proba, rtol=1e-6)
    got_labels = [v.decode() if isinstance(v, bytes) else v for v in result.as_numpy("label")]
    assert got_labels == labels
    header = result.get_response()
    sent_binary = {o["name"] for o in header["outputs"] if "binary_data_size" in o.get("parameters", {})}
    assert sent_binary == (set() if outputs == "json" else {"probability", "label"})
    assert header["id"] == "t-1"
    client.close()


def test_tritonclient_sees_validation_errors(server, spec, rows):
    """A bad value reaches the client as the server's 400 message, naming the input, in both modes."""
    client = triton.InferenceServerClient(url=f"127.0.0.1:{server.port}")
    categorical = spec.of_kind("categorical")
    numeric = [f for f in spec.of_kind("numeric") if f["max"] is not None]
    for binary in (False, True):
        if categorical:
            bad = [{**r, categorical[0]["name"]: "<no such category>"} for r in complete_rows(rows, 2)]
            with pytest.raises(
                InferenceServerException, match=f"input '{categorical[0]['name']}'.*unknown category"
            ):
                client.infer(spec.name, triton_inputs(spec, bad, binary))
        if numeric:
            big = int(numeric[0]["max"]) + 1 if numeric[0]["dtype"] == "INT64" else numeric[0]["max"] * 2 + 1
            bad = [{**r, numeric[0]["name"]: big} for r in complete_rows(rows, 2)]
            with pytest.raises(InferenceServerException, match=f"input '{numeric[0]['name']}'.*outside"):
                client.infer(spec.name, triton_inputs(spec, bad, binary))
    client.close()


@pytest.fixture(scope="session")
def kserve_client_python():
    """The KServe SDK's virtualenv (built on first use, minutes; then reused from the cache)."""
    return kserve_python()


def test_kserve_rest_client(server, model_dir, spec, rows, kserve_client_python, tmp_path):
    modes = [
        {"binary_inputs": bi, "binary_outputs": bo, "per_output": po}
        for bi in (False, True)
        for bo in (False, True)
        for po in (False, True)
    ]
    results = {}
    for binary_inputs in (False, True):
        chosen = with_missing(rows, 6) if binary_inputs else complete_rows(rows, 6)
        request = {
            "url": server.url,
            "model": spec.name,
            "features": spec.features,
            "rows": chosen,
            "modes": [m for m in modes if m["binary_inputs"] == binary_inputs],
        }
        (tmp_path / "request.json").write_text(json.dumps(request))
        run = subprocess.run(
            [str(kserve_client_python), str(CLIENTS / "kserve_infer.py"), str(tmp_path / "request.json")],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert run.returncode == 0, run.stderr[-3000:]
        proba, labels = expected(model_dir, spec, chosen)
        for mode, got in zip(request["modes"], json.loads(run.stdout), strict=True):
            np.testing.assert_allclose(got["probability"], proba, rtol=1e-6, err_msg=str(mode))
            assert got["label"] == labels, mode
            assert got["id"] == "kserve-1"
            assert got["binary_response"] == mode["binary_outputs"], mode
            results[json.dumps(mode)] = got
    assert len(results) == 8
