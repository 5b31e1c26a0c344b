"""Project tests, model: the behavioural expectations declared in params.yaml `expectations` hold on real
test rows, and the served model answers requests built from the schema and from real rows with the
outputs of its task (mlops.task: `Task.output_spec()`).

Directional (changing one feature moves the watched output the declared way: the positive-class
probability, a named class's probability, or the predicted value), invariance (changing a column the
model must ignore, such as the id, moves nothing) and minimum functionality (rows matching a condition
get the declared class, or a predicted value in the declared band) are data in params.yaml; this file
only evaluates them.
"""

from __future__ import annotations

import json

import httpx
import numpy as np

from mlops import expectations
from mlops.task import LABEL_OUTPUT, Task

from .cases import infer_body, plain, request_corruptions, schema_rows


def test_declared_expectations_hold_on_real_test_rows(model, split_rows, project_params):
    """Every expectation in params.yaml, checked on the raw rows of the test split (none declared: the
    id invariance below still runs)."""
    outcomes = expectations.evaluate(project_params.expectations, model, split_rows)
    vacuous = [o.description for o in outcomes if o.rows == 0]
    assert not vacuous, f"no test row qualifies, so nothing was checked: {vacuous}"
    failed = [o.as_dict() for o in outcomes if not o.passed]
    assert not failed, failed


def test_model_predicts_the_task_params_yaml_declares(model, project_params):
    """The trained model's task, label column and classes are those of params.yaml `schema`, so the
    expectations and the served outputs below mean what params.yaml says."""
    schema = project_params.schema_
    task = model.task
    assert (task.kind, task.column) == (schema.task, schema.label.column)
    assert task.classes == tuple(schema.label.classes or ())
    if task.kind == "binary":
        assert task.positive == schema.label.positive


def test_predictions_are_invariant_to_the_id(model, split_rows, project_params):
    """Whatever params.yaml declares: the id is not an input, so replacing every id changes nothing."""
    id_column = project_params.schema_.id
    moved = split_rows.copy()
    moved[id_column] = moved[id_column].astype(str) + "-other"
    assert np.array_equal(model.predict_proba(moved), model.predict_proba(split_rows))


def test_model_meets_the_gate_metric_bounds_on_its_test_split(project, project_params):
    """The evaluated test metrics are inside the absolute bounds params.yaml's gate sets."""
    metrics = json.loads(project.metrics.read_text())["test"]
    for name, bound in project_params.gate.metrics.min.items():
        assert metrics[name] >= bound, (name, metrics[name], bound)
    for name, bound in project_params.gate.metrics.max.items():
        assert metrics[name] <= bound, (name, metrics[name], bound)


def _infer(url: str, name: str, body: dict, client: httpx.Client | None = None) -> httpx.Response:
    return (client or httpx).post(f"{url}/v2/models/{name}/infer", json=body, timeout=30)


def _outputs(response: httpx.Response, task: Task) -> tuple[np.ndarray, list[str] | None]:
    """(the task's numeric output, the labels or None) of an OIP answer, read by the names, datatypes and
    shapes of `Task.output_spec()`: exactly those outputs, [n] each, or [n, N] (row-major) for the
    multiclass probabilities."""
    assert response.status_code == 200, response.text
    answered = {o["name"]: o for o in response.json()["outputs"]}
    spec = {o["name"]: o for o in task.output_spec()}
    assert set(answered) == set(spec), (sorted(answered), sorted(spec))
    for name, want in spec.items():
        got = answered[name]
        assert got["datatype"] == want["datatype"], (name, got["datatype"], want["datatype"])
        assert len(got["shape"]) == len(want["shape"]), (name, got["shape"], want["shape"])
        fits = all(w in (-1, g) for g, w in zip(got["shape"], want["shape"], strict=True))
        assert fits, (name, got["shape"], want["shape"])
    numeric = answered[task.output_name]
    values = np.asarray(numeric["data"], dtype=float).reshape(numeric["shape"])
    labels = answered[LABEL_OUTPUT]["data"] if task.is_classification else None
    return values, labels


def _check_outputs(task: Task, out: np.ndarray, rows: int) -> None:
    """Outputs that mean what the task says: probabilities in [0, 1] (each row summing to 1 over the
    classes for multiclass), or finite predicted values."""
    assert out.shape == ((rows, len(task.classes)) if task.kind == "multiclass" else (rows,)), out.shape
    assert np.all(np.isfinite(out))
    if task.is_classification:
        assert np.all((out >= 0) & (out <= 1))
    if task.kind == "multiclass":
        assert np.allclose(out.sum(axis=1), 1.0, atol=1e-5)


def _close(served: np.ndarray, local: np.ndarray) -> bool:
    """Served (ONNX Runtime or torch, float32 inside) equals in-process up to float32 rounding: 1e-6
    absolute for probabilities, 1e-5 relative for predicted values in the target's units."""
    return served.shape == local.shape and np.allclose(served, local, rtol=1e-5, atol=1e-6)


def test_served_model_answers_a_request_built_from_the_schema(served, model):
    """Rows made from model.json's feature spec alone (every category, the numeric ranges, nulls where
    allowed) get the task's outputs, equal to the model's in-process outputs, and (classification)
    labels from the label classes."""
    task = model.task
    features = model.metadata["features"]
    n = max(3, *(len(f.get("categories") or ()) for f in features))
    rows = schema_rows(features, n)
    out, labels = _outputs(_infer(served, model.name, infer_body(features, rows)), task)
    _check_outputs(task, out, n)
    expected = model.predict_proba(rows)
    assert _close(out, expected), np.max(np.abs(out - expected))
    if task.is_classification:  # (rows built at the ranges' edges may sit on a decision boundary)
        assert len(labels) == n and set(labels) <= set(task.classes)


def test_served_model_matches_the_model_on_real_test_rows(served, model, split_rows):
    """Real test rows sent over the Open Inference Protocol score as they do in-process (and get the same
    labels, for classification)."""
    task = model.task
    features = model.metadata["features"]
    sample = split_rows.head(64)
    columns = {f["name"]: sample[f["name"]].tolist() for f in features}
    out, labels = _outputs(_infer(served, model.name, infer_body(features, columns)), task)
    _check_outputs(task, out, len(sample))
    expected = model.predict_proba(sample)
    assert _close(out, expected), np.max(np.abs(out - expected))
    if task.is_classification:
        assert labels == model.predict_label(expected)


def test_served_model_refuses_bad_values_naming_the_input(served, model):
    """For every feature, values its spec forbids (out of range, non-integer, unknown category, null when
    not nullable) get 400 naming that input, never a 5xx."""
    features = model.metadata["features"]
    integer = {f["name"]: f["dtype"] == "INT64" for f in features}
    refused = []
    with httpx.Client() as client:
        for name, what, value in request_corruptions(features):
            rows = {**schema_rows(features, 1), name: [plain(value, integer[name])]}  # one row, one bad value
            response = _infer(served, model.name, infer_body(features, rows), client)
            assert response.status_code == 400, (name, what, response.status_code, response.text)
            assert f"'{name}'" in response.json()["error"], (name, what, response.text)
            refused.append(name)
    assert set(refused) == {f["name"] for f in features}
