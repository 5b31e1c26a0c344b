"""Every task served: a real `mlops serve` on the multiclass model (modeldata/hpc_data: classes VF, F, M,
L) and on the regression model (ggplot2/diamonds: price) answers with its task's outputs (mlops.task) on
every path, equal to the in-process model (`Scorer.predict_proba`, labels from `Task.labels`):

- multiclass: `probabilities` FP64 [n, N] (data flat, row-major, classes in the metadata's order) and
  `label` BYTES [n]; regression: `prediction` FP64 [n];
- the model metadata and /openapi.json name them; a request may select them, an unknown name is a 400;
- plain JSON (the fast path and the reference path), the binary tensor data extension, Triton's and
  KServe's clients, concurrent requests micro-batched into one forward pass and split back by rows;
- the prediction log's records carry them under their names (`Task.logged_outputs` reads them back);
- /metrics: predicted classes (multiclass), a histogram of predicted values (regression);
- the MLflow pyfunc returns the columns of its signature (binary too).
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import jsonschema_rs
import numpy as np
import pytest
import tritonclient.http as triton

from mlops import pyfunc_bundle, scorer
from mlops.serve import protocol
from mlops.serve.prometheus import value_buckets
from mlops.task import MULTICLASS, REGRESSION, Task

from .oip_clients.toolenv import HERE as CLIENTS
from .oip_clients.toolenv import kserve_python
from .serve_helpers import ModelSpec, Server, infer_body, split_rows, start_server, unpack_response
from .test_clients import complete_rows, triton_inputs

pytestmark = pytest.mark.slow

ATOL = 1e-6


@dataclass
class Served:
    """One task's model served, with what the tests compare against."""

    kind: str
    server: Server
    model_dir: Path
    spec: ModelSpec
    rows: list[dict[str, Any]]
    model: scorer.OnnxModel

    @property
    def task(self) -> Task:
        return self.model.task

    def expected(self, rows: list[dict[str, Any]]) -> np.ndarray:
        """The in-process model's outputs for `rows`: [rows], or [rows, classes]."""
        columns = {k: [np.nan if r[k] is None else r[k] for r in rows] for k in self.spec.names}
        return self.model.predict_proba(columns)

    def post(self, body: dict[str, Any] | bytes, headers: dict[str, str] | None = None) -> httpx.Response:
        content = body if isinstance(body, bytes) else json.dumps(body).encode()
        return httpx.post(self.server.infer_url(), content=content, headers=headers or {}, timeout=30)


@pytest.fixture(scope="module", params=[MULTICLASS, REGRESSION])
def served(request, task_pipeline, tmp_path_factory):
    """The task's model behind a real server: 2 workers, batches wait up to 20 ms for more requests,
    every request in the prediction log (flushed every 0.2 s)."""
    ws = task_pipeline(request.param)
    root = tmp_path_factory.mktemp(f"serve-{request.param}")
    model_dir = root / "models"
    shutil.copytree(ws.models, model_dir)
    spec = ModelSpec.from_dir(model_dir)
    rows = split_rows(ws.raw, ws.processed / "test.parquet", spec)
    assert len(rows) >= 40, f"test split has {len(rows)} rows"
    srv = start_server(
        root,
        model_dir,
        workers=2,
        max_wait_ms=20,
        prediction_log={"rate": 1.0, "dir": str(root / "predictions"), "flush_interval_s": 0.2},
    )
    yield Served(request.param, srv, model_dir, spec, rows, scorer.load_onnx(model_dir))
    assert srv.stop() == 0, srv.log.read_text()[-3000:]
    assert "Traceback" not in srv.log.read_text(), srv.log.read_text()[-3000:]


def assert_outputs(served: Served, outputs: list[dict[str, Any]], rows: list[dict[str, Any]]) -> None:
    """A JSON response's outputs (every output, in the spec's order) equal the in-process model's."""
    task, expected = served.task, served.expected(rows)
    assert [o["name"] for o in outputs] == list(task.output_names())
    got = {o["name"]: o for o in outputs}
    numeric = got[task.output_name]
    assert numeric["datatype"] == "FP64"
    assert numeric["shape"] == list(expected.shape)  # [n] or [n, N]
    np.testing.assert_allclose(numeric["data"], expected.ravel(), rtol=0, atol=ATOL)  # flat, row-major
    if task.is_classification:
        assert got["label"]["datatype"] == "BYTES" and got["label"]["shape"] == [len(rows)]
        assert got["label"]["data"] == task.labels(expected)
    else:
        assert "label" not in got


def sample(text: str, name: str, **labels: str) -> float | None:
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            got = dict(re.findall(r'(\w+)="([^"]*)"', line.split(" ")[0]))
            if all(got.get(k) == v for k, v in labels.items()):
                return float(line.rsplit(" ", 1)[1])
    return None


# ------------------------------------------------------------ metadata and the response encoders


def test_metadata_and_openapi_name_the_task_outputs(served):
    task, spec = served.task, served.spec
    meta = httpx.get(f"{served.server.url}/v2/models/{spec.name}").json()
    assert meta["outputs"] == task.output_spec()
    if task.kind == MULTICLASS:
        assert meta["outputs"][0] == {"name": "probabilities", "datatype": "FP64", "shape": [-1, 4]}
        assert meta["parameters"]["classes"] == list(task.classes) == ["VF", "F", "M", "L"]
    else:
        assert meta["outputs"] == [{"name": "prediction", "datatype": "FP64", "shape": [-1]}]
        assert meta["parameters"]["target"] == task.column == "price"
    doc = httpx.get(f"{served.server.url}/openapi.json").json()
    infer = doc["paths"]["/v2/models/{model_name}/infer"]["post"]
    request_outputs = infer["requestBody"]["content"]["application/json"]["schema"]["properties"]["outputs"]
    assert request_outputs["items"]["properties"]["name"]["enum"] == list(task.output_names())
    response = infer["responses"]["200"]["content"]["application/json"]["schema"]
    one_of = response["properties"]["outputs"]["items"]["oneOf"]
    assert [o["properties"]["name"]["enum"] for o in one_of] == [[n] for n in task.output_names()]
    # the published schema holds for a real answer, and refuses the other tasks' outputs
    validator = jsonschema_rs.Draft4Validator(response)
    answer = served.post(infer_body(served.spec, served.rows[:3])).json()
    validator.validate(answer)
    foreign = {
        **answer,
        "outputs": [{"name": "probability", "datatype": "FP64", "shape": [3], "data": [0.1] * 3}],
    }
    assert not validator.is_valid(foreign)


@pytest.mark.parametrize("kind", ["binary", MULTICLASS, REGRESSION])
def test_response_template_writes_what_response_writes(kind):
    """The fast JSON encoder and the general one agree byte for byte on every task's outputs, and the
    binary extension's bytes are the flat values."""
    classes = {"binary": ("No", "Yes"), MULTICLASS: ("VF", "F", "M", "L"), REGRESSION: ()}[kind]
    task = Task(kind, "y", classes, "Yes" if kind == "binary" else None)
    spec = task.output_spec()
    rng = np.random.default_rng(0)
    for n in (1, 3):
        out = rng.dirichlet(np.ones(4), size=n) if kind == MULTICLASS else rng.random(n) * 1000
        named = task.outputs(out)
        data = [np.asarray(v).ravel().tolist() if k == task.output_name else v for k, v in named.items()]
        for request_id in (None, "r-1"):
            body, header = protocol.response("m", "v", request_id, None, *data, spec=spec)
            assert header is None
            assert protocol.ResponseTemplate("m", "v", spec).encode(request_id, *data) == body
            decoded = json.loads(body)["outputs"]
            assert decoded[0]["shape"] == list(out.shape)
        raw, header = protocol.response(
            "m", "v", None, None, *data, binary=frozenset(task.output_names()), spec=spec
        )
        first = json.loads(raw[:header])["outputs"][0]
        size = first["parameters"]["binary_data_size"]
        assert np.frombuffer(raw[header : header + size], "<f8").tolist() == data[0]


def test_deferred_value_histogram_exposes_what_direct_observations_do():
    """The regression histogram is written like the other series (summed per event-loop iteration): its
    exposition equals prometheus_client's own `observe` of each value."""
    from prometheus_client import CollectorRegistry, Histogram, generate_latest

    from mlops.serve import prometheus as metrics_mod

    buckets = value_buckets({"label": {"column": "price", "scale": {"mean": 3949.77, "std": 4000.83}}})
    assert 3950.0 in buckets and buckets[0] < 0 and buckets == tuple(sorted(set(buckets)))  # mean +- k std
    values = [*np.random.default_rng(0).normal(3950, 4000, 200).tolist(), *buckets]
    m = metrics_mod.Metrics()
    pending: list = []
    m.call_soon = pending.append
    m.track_values(buckets)
    for start in range(0, len(values), 7):
        m.predicted_values("m", "v", values[start : start + 7])
    assert len(pending) == 1
    registry = CollectorRegistry()
    direct = Histogram(
        "mlops_serve_predicted_value", "h", ["model", "version"], buckets=buckets, registry=registry
    )
    for v in values:
        direct.labels("m", "v").observe(v)

    def lines(text: bytes) -> list[bytes]:
        return sorted(
            line
            for line in text.splitlines()
            if line.startswith(b"mlops_serve_predicted_value_") and b"_created" not in line
        )

    assert lines(m.exposition()[0]) == lines(generate_latest(registry))
    assert value_buckets({"label": {"column": "y"}}) == tuple(Histogram.DEFAULT_BUCKETS[:-1])  # no scale


# ------------------------------------------------------------ JSON, selection, binary extension


def test_json_answers_equal_the_in_process_model(served):
    rows = served.rows[:5]
    fast = served.post(infer_body(served.spec, rows, request_id="t-1"))
    assert fast.status_code == 200, fast.text
    assert fast.json()["id"] == "t-1"
    assert_outputs(served, fast.json()["outputs"], rows)
    one = served.post(infer_body(served.spec, rows[:1]))  # the fast path's one-row encoder
    assert_outputs(served, one.json()["outputs"], rows[:1])
    # [n, 1] nested inputs take the reference path: the same answer
    nested = infer_body(served.spec, rows)
    for tensor in nested["inputs"]:
        tensor["shape"], tensor["data"] = [len(rows), 1], [[v] for v in tensor["data"]]
    reference = served.post(nested)
    assert reference.status_code == 200, reference.text
    assert reference.json()["outputs"] == fast.json()["outputs"]


def test_output_selection_and_unknown_outputs(served):
    task, rows = served.task, served.rows[:3]
    full = {o["name"]: o for o in served.post(infer_body(served.spec, rows)).json()["outputs"]}
    for name in task.output_names():
        resp = served.post({**infer_body(served.spec, rows), "outputs": [{"name": name}]})
        assert resp.status_code == 200, resp.text
        assert resp.json()["outputs"] == [full[name]]
    # the other tasks' names are unknown here: a 400 naming the output (also on the reference path)
    others = {"probability", "probabilities", "prediction", "label", "logits"} - set(task.output_names())
    for name in sorted(others):
        for body in (infer_body(served.spec, rows), infer_body(served.spec, rows[:1])):
            resp = served.post({**body, "outputs": [{"name": task.output_name}, {"name": name}]})
            assert resp.status_code == 400, resp.text
            message = resp.json()["error"]
            assert f"output '{name}'" in message and "unknown output" in message, message
            assert ", ".join(task.output_names()) in message, message


def test_binary_outputs_carry_the_flat_values(served):
    task, rows = served.task, served.rows[:4]
    expected = served.post(infer_body(served.spec, rows)).json()["outputs"]
    choices = [({"binary_data_output": True}, None, set(task.output_names()))]
    choices.append(
        (None, [{"name": task.output_name, "parameters": {"binary_data": True}}], {task.output_name})
    )
    if task.is_classification:
        choices.append(
            (
                {"binary_data_output": True},
                [{"name": "label"}, {"name": task.output_name, "parameters": {"binary_data": False}}],
                {"label"},
            )
        )
    for parameters, outputs, binary_names in choices:
        body = infer_body(served.spec, rows)
        if parameters:
            body["parameters"] = parameters
        if outputs:
            body["outputs"] = outputs
        resp = served.post(body)
        assert resp.status_code == 200, resp.text
        assert resp.headers["content-type"] == "application/octet-stream"
        length = int(resp.headers["inference-header-content-length"])
        header = json.loads(resp.content[:length])
        sent = {o["name"] for o in header["outputs"] if "binary_data_size" in o.get("parameters", {})}
        assert sent == binary_names
        got = {o["name"]: o for o in unpack_response(resp.content, resp.headers)["outputs"]}
        for want in expected:
            if want["name"] in got:
                assert {k: got[want["name"]][k] for k in ("datatype", "shape")} == {
                    k: want[k] for k in ("datatype", "shape")
                }
                assert got[want["name"]]["data"] == want["data"]


@pytest.mark.parametrize("kind", [MULTICLASS, REGRESSION])
def test_serving_forward_gives_the_task_outputs_on_both_backends(kind, task_pipeline):
    """The batcher's forward (the graph's own output name on ONNX Runtime, the model's forward on torch)
    answers what `Scorer.forward` answers: [rows, classes] or [rows]."""
    from mlops import model as model_mod
    from mlops.serve.app import serving_forward

    models = task_pipeline(kind).models
    onnx_model, torch_model = scorer.load_onnx(models), model_mod.load(models)
    x = np.random.default_rng(0).normal(size=(7, onnx_model.preprocessor.width)).astype(np.float32)
    expected = onnx_model.forward(x)
    assert expected.shape == ((7, 4) if kind == MULTICLASS else (7,))
    assert serving_forward(onnx_model)(x).tolist() == expected.tolist()
    np.testing.assert_allclose(serving_forward(torch_model)(x), expected, rtol=1e-5, atol=1e-4)


# ------------------------------------------------------------ third-party clients


@pytest.mark.parametrize("binary_inputs", [False, True], ids=["json-inputs", "binary-inputs"])
@pytest.mark.parametrize("outputs", ["default", "json", "binary"])
def test_tritonclient(served, binary_inputs, outputs):
    task, spec = served.task, served.spec
    rows = complete_rows(served.rows, 6)
    expected = served.expected(rows)
    client = triton.InferenceServerClient(url=f"127.0.0.1:{served.server.port}")
    assert client.get_model_metadata(spec.name)["outputs"] == task.output_spec()
    wanted = None  # the client's default: every output, in binary
    if outputs != "default":
        wanted = [
            triton.InferRequestedOutput(n, binary_data=outputs == "binary") for n in task.output_names()
        ]
    result = client.infer(spec.name, triton_inputs(spec, rows, binary_inputs), outputs=wanted, request_id="t")
    got = result.as_numpy(task.output_name)
    assert got.shape == expected.shape and got.dtype == np.float64
    np.testing.assert_allclose(got, expected, rtol=0, atol=ATOL)
    if task.is_classification:
        assert [v.decode() if isinstance(v, bytes) else v for v in result.as_numpy("label")] == task.labels(
            expected
        )
    else:
        assert result.as_numpy("label") is None
    header = result.get_response()
    sent = {o["name"] for o in header["outputs"] if "binary_data_size" in o.get("parameters", {})}
    assert sent == (set() if outputs == "json" else set(task.output_names()))
    client.close()


@pytest.fixture(scope="module")
def kserve_client_python():
    """The KServe SDK's virtualenv (built on first use, minutes; then reused from the cache)."""
    return kserve_python()


def test_kserve_rest_client(served, kserve_client_python, tmp_path):
    task, spec = served.task, served.spec
    modes = [
        {"binary_inputs": bi, "binary_outputs": bo, "per_output": po}
        for bi in (False, True)
        for bo in (False, True)
        for po in (False, True)
    ]
    rows = complete_rows(served.rows, 6)
    request = {
        "url": served.server.url,
        "model": spec.name,
        "features": spec.features,
        "rows": rows,
        "modes": modes,
        "outputs": list(task.output_names()),
    }
    (tmp_path / "request.json").write_text(json.dumps(request))
    run = subprocess.run(
        [str(kserve_client_python), str(CLIENTS / "kserve_infer.py"), str(tmp_path / "request.json")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    expected = served.expected(rows)
    results = json.loads(run.stdout)
    assert len(results) == len(modes)
    for mode, got in zip(modes, results, strict=True):
        assert set(got) == {*task.output_names(), "id", "binary_response"}, mode
        np.testing.assert_allclose(got[task.output_name], expected, rtol=0, atol=ATOL, err_msg=str(mode))
        if task.is_classification:
            assert got["label"] == task.labels(expected), mode
        assert got["binary_response"] == mode["binary_outputs"], mode


# ------------------------------------------------------------ batching, prediction log, metrics


def test_concurrent_requests_are_batched_and_split_back_by_rows(served):
    """Requests of 1 to 4 rows from 16 clients at once share forward passes (batches wait up to 20 ms);
    each gets exactly its own rows of the batch's output."""
    rows = served.rows[:40]
    expected = served.expected(rows)
    before = served.server.metrics()

    def client(i: int) -> list[tuple[int, int, dict[str, Any]]]:
        out = []
        with httpx.Client(timeout=30) as c:
            for j in range(6):
                start, size = (i * 7 + j * 3) % 36, 1 + (i + j) % 4
                r = c.post(
                    served.server.infer_url(), json=infer_body(served.spec, rows[start : start + size])
                )
                out.append((start, size, r.json() if r.status_code == 200 else {"status": r.status_code}))
        return out

    with ThreadPoolExecutor(16) as pool:
        results = [x for chunk in pool.map(client, range(16)) for x in chunk]
    task = served.task
    for start, size, body in results:
        assert "outputs" in body, body
        got = {o["name"]: o for o in body["outputs"]}
        part = expected[start : start + size]
        assert got[task.output_name]["shape"] == list(part.shape)
        np.testing.assert_allclose(got[task.output_name]["data"], part.ravel(), rtol=0, atol=ATOL)
        if task.is_classification:
            assert got["label"]["data"] == task.labels(part)
    after = served.server.metrics()
    batches = sample(after, "mlops_serve_batch_rows_count") - (
        sample(before, "mlops_serve_batch_rows_count") or 0
    )
    batched_rows = sample(after, "mlops_serve_batch_rows_sum") - (
        sample(before, "mlops_serve_batch_rows_sum") or 0
    )
    assert batched_rows == sum(size for _, size, _ in results)
    assert batches < len(results), f"{len(results)} requests in {batches} forward passes: none batched"


def test_prediction_log_records_the_task_outputs(served):
    task, rows = served.task, served.rows[:3]
    resp = served.post(infer_body(served.spec, rows, request_id=f"logged-{served.kind}"))
    assert resp.status_code == 200, resp.text
    deadline = time.monotonic() + 10
    records: list[dict[str, Any]] = []
    while time.monotonic() < deadline and len(records) < len(rows):
        time.sleep(0.2)
        records = [
            json.loads(line)
            for f in sorted((served.server.root / "predictions").glob("*.jsonl"))
            for line in f.read_text().splitlines()
            if f'"logged-{served.kind}"' in line
        ]
    assert len(records) == len(rows)
    expected = served.expected(rows)
    named = task.outputs(expected)  # the record shape: Task.outputs of the row
    for i, record in enumerate(records):
        assert list(record) == ["ts", "model", "model_version", "request_id", "inputs", *task.output_names()]
        assert record["inputs"] == rows[i]
        assert record["model"] == served.spec.name and record["model_version"] == served.spec.version
        np.testing.assert_allclose(task.logged_outputs(record), expected[i], rtol=0, atol=ATOL)
        if task.kind == MULTICLASS:
            assert isinstance(record["probabilities"], list) and len(record["probabilities"]) == 4
            assert record["label"] == named["label"][i]
        else:
            assert isinstance(record["prediction"], float)


def test_metrics_per_task(served):
    task, spec, rows = served.task, served.spec, served.rows[:8]
    before = served.server.metrics()
    for _ in range(3):
        assert served.post(infer_body(spec, rows)).status_code == 200
    after = served.server.metrics()
    expected = served.expected(rows)
    model = {"model": spec.name, "version": spec.version}
    if task.kind == MULTICLASS:
        labels = task.labels(expected)
        for c in task.classes:
            grown = (sample(after, "mlops_serve_predictions_total", **model, **{"class": c}) or 0) - (
                sample(before, "mlops_serve_predictions_total", **model, **{"class": c}) or 0
            )
            assert grown == 3 * labels.count(c), c
        assert "mlops_serve_predicted_value" not in after
        return
    assert "mlops_serve_predictions_total{" not in after  # no classes to count
    count = sample(after, "mlops_serve_predicted_value_count", **model) - (
        sample(before, "mlops_serve_predicted_value_count", **model) or 0
    )
    assert count == 3 * len(rows)
    total = sample(after, "mlops_serve_predicted_value_sum", **model) - (
        sample(before, "mlops_serve_predicted_value_sum", **model) or 0
    )
    assert total == pytest.approx(3 * expected.sum(), rel=1e-6)
    bounds = re.findall(r'^mlops_serve_predicted_value_bucket\{[^}]*le="([^"]+)"', after, re.M)
    buckets = value_buckets(json.loads((served.model_dir / "model.json").read_text()))
    assert [float(b) for b in bounds] == [*buckets, float("inf")]
    assert buckets[0] < float(expected.min()) and float(expected.max()) < buckets[-1]


# ------------------------------------------------------------ the MLflow pyfunc


@pytest.fixture(params=["binary", MULTICLASS, REGRESSION])
def trained(request, pipeline, task_pipeline):
    return pipeline if request.param == "binary" else task_pipeline(request.param)


def test_pyfunc_returns_the_columns_of_its_signature(trained, tmp_path):
    """Saved as `mlops register` logs it (models from code, the bundled code, the signature) and loaded
    by MLflow: the frame's columns are the signature's, the values the in-process model's."""
    import mlflow
    import pandas as pd

    meta = json.loads((trained.models / "model.json").read_text())
    signature = pyfunc_bundle.signature(meta)
    code = pyfunc_bundle.stage_code(tmp_path / "code")
    mlflow.pyfunc.save_model(
        path=str(tmp_path / "pyfunc"),
        python_model=str(pyfunc_bundle.ENTRY),
        artifacts={"model": str(trained.models)},
        code_paths=[str(code)],
        pip_requirements=["mlflow"],
        signature=signature,
    )
    loaded = mlflow.pyfunc.load_model(str(tmp_path / "pyfunc"))
    names = [f["name"] for f in meta["features"]]
    frame = pd.read_parquet(trained.raw, columns=names).head(12)
    got = loaded.predict(frame)
    task = Task.from_metadata(meta)
    assert list(got.columns) == signature.outputs.input_names()
    if task.kind == MULTICLASS:
        assert list(got.columns) == [f"probability[{c}]" for c in task.classes] + ["label"]
    elif task.kind == REGRESSION:
        assert list(got.columns) == ["prediction"]
    else:
        assert list(got.columns) == ["probability", "label"]
    for column, kind in zip(signature.outputs.input_names(), signature.outputs.input_types(), strict=True):
        if kind.name == "string":
            assert got[column].map(type).eq(str).all(), column
        else:
            assert got[column].dtype == np.float64, column
    expected = scorer.load_onnx(trained.models).predict_proba(frame)
    for column, values in task.prediction_columns(expected).items():
        np.testing.assert_allclose(got[column].to_numpy(), values, rtol=0, atol=ATOL)
    if task.is_classification:
        assert got["label"].tolist() == task.labels(expected)
