"""Project tests, model: the behavioural expectations declared in params.yaml `expectations` hold on real
test rows, and the served model answers requests built from the schema and from real rows.

Directional (changing one feature moves the probability the declared way), invariance (changing a
column the model must ignore, such as the id, moves nothing) and minimum functionality (rows matching
a condition get the declared class) are data in params.yaml; this file only evaluates them.
"""

from __future__ import annotations

import json

import httpx
import numpy as np

from mlops import expectations

from .cases import infer_body, plain, request_corruptions, schema_rows


def test_declared_expectations_hold_on_real_test_rows(model, split_rows, project_params):
    """Every expectation in params.yaml, checked on the raw rows of the test split (none declared: the
    id invariance below still runs)."""
    outcomes = expectations.evaluate(project_params.expectations, model, split_rows)
    vacuous = [o.description for o in outcomes if o.rows == 0]
    assert not vacuous, f"no test row qualifies, so nothing was checked: {vacuous}"
    failed = [o.as_dict() for o in outcomes if not o.passed]
    assert not failed, failed


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


def _outputs(response: httpx.Response) -> tuple[np.ndarray, list[str]]:
    assert response.status_code == 200, response.text
    out = {o["name"]: o["data"] for o in response.json()["outputs"]}
    return np.asarray(out["probability"], dtype=float), out["label"]


def test_served_model_answers_a_request_built_from_the_schema(served, model):
    """Rows made from model.json's feature spec alone (every category, the numeric ranges, nulls where
    allowed) get the same probabilities as the model in-process, and labels from the label classes."""
    features = model.metadata["features"]
    n = max(3, *(len(f.get("categories") or ()) for f in features))
    rows = schema_rows(features, n)
    proba, labels = _outputs(_infer(served, model.name, infer_body(features, rows)))
    assert proba.shape == (n,) and np.all((proba >= 0) & (proba <= 1))
    assert np.allclose(proba, model.predict_proba(rows), atol=1e-6)
    assert set(labels) <= set(model.metadata["label"]["classes"])


def test_served_model_matches_the_model_on_real_test_rows(served, model, split_rows):
    """Real test rows sent over the Open Inference Protocol score as they do in-process."""
    features = model.metadata["features"]
    sample = split_rows.head(64)
    columns = {f["name"]: sample[f["name"]].tolist() for f in features}
    proba, labels = _outputs(_infer(served, model.name, infer_body(features, columns)))
    expected = model.predict_proba(sample)
    assert np.allclose(proba, expected, atol=1e-6)
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
