"""`mlops drift` for the multiclass and regression tasks, on the `task_pipeline` models (hpc_data,
diamonds): the registered reference holds the task's prediction columns, the window reads the records
the server logs for the task (multiclass `probabilities` + `label`, regression `prediction`) built here
from the model's real outputs, an unshifted window of held-out rows is not flagged, a shifted one is
(features and predictions), target drift tests labelled rows, and records of another task are refused.

Held-out rows (validation + test split) are drawn from the same distribution as the training rows of the
reference (the split hashes the id): the largest feature distance of an unshifted window here is ~0.06,
against 0.1 thresholds; the shifts applied move their features' distances above 0.3.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from mlops import cli, registry, tables
from mlops import model as model_lib
from mlops.config import load_params
from mlops.monitor.window import read_window
from mlops.task import Task

from .drift_helpers import parse_metrics, stamp, strict_json, write_log

NOW = dt.datetime.now(dt.UTC)
MODEL = "task-model"
WINDOW_ROWS = 3000


def shift_multiclass(rows: pd.DataFrame) -> None:
    """Three times the compounds, half the jobs on protocol O."""
    rows["compounds"] = rows["compounds"] * 3
    rows.loc[rows.index % 2 == 0, "protocol"] = "O"


def shift_regression(rows: pd.DataFrame) -> None:
    """Stones half again as heavy, half of them of Fair cut."""
    rows["carat"] = rows["carat"] * 1.5
    rows.loc[rows.index % 2 == 0, "cut"] = "Fair"


SHIFTS = {
    "multiclass": (shift_multiclass, ["compounds", "protocol"]),
    "regression": (shift_regression, ["carat", "cut"]),
}


def shift_labels(task: Task, labels: list[Any]) -> list[Any]:
    """True labels of another mix: two rows in three of the last class, or prices half again as high."""
    if task.is_classification:
        return [task.classes[-1] if i % 3 else v for i, v in enumerate(labels)]
    return [v * 1.5 for v in labels]


@dataclass
class Case:
    """One task's trained workspace, its model, the registered reference and held-out raw rows."""

    kind: str
    root: Path
    params: Path
    model: Any
    reference: Path
    held_out: pd.DataFrame  # raw columns + the encoded `label`

    @property
    def task(self) -> Task:
        return self.model.task

    @property
    def features(self) -> list[str]:
        return [f["name"] for f in self.model.metadata["features"]]


@pytest.fixture(scope="module", params=["multiclass", "regression"])
def case(request, task_pipeline, tmp_path_factory) -> Case:
    ws = task_pipeline(request.param)
    root = tmp_path_factory.mktemp(f"drift-{request.param}")
    model = model_lib.load(ws.models)
    drift = load_params(ws.params).drift
    reference = registry.reference_sample(
        model, ws.raw, ws.processed / "train.parquet", drift.reference_rows, drift.seed
    )
    reference.to_parquet(root / "reference.parquet", index=False)
    held_out = pd.concat(
        [
            tables.split_rows(ws.raw, ws.processed / f"{s}.parquet", model.metadata["id"])
            for s in ("valid", "test")
        ]
    )
    held_out = held_out.sample(n=min(WINDOW_ROWS, len(held_out)), random_state=0).reset_index(drop=True)
    return Case(request.param, root, ws.params, model, root / "reference.parquet", held_out)


def records(case: Case, rows: pd.DataFrame, actual: list[Any] | None = None) -> list[dict[str, Any]]:
    """The prediction-log records of `rows` as the server writes them for the task: the inputs and the
    task's served outputs (`Task.outputs` of the model's real outputs); `actual` as a label join adds it."""
    outputs = case.model.predict_proba({n: rows[n].to_numpy() for n in case.features})
    served = case.task.outputs(outputs)
    inputs = rows[case.features].astype(object).to_dict("records")
    out = []
    for i, row in enumerate(inputs):
        record = {
            "ts": stamp(NOW - dt.timedelta(minutes=5)),
            "model": MODEL,
            "model_version": "0123456789ab",
            "request_id": str(i),
            "inputs": {k: (v.item() if hasattr(v, "item") else v) for k, v in row.items()},
        }
        record |= {name: values[i] for name, values in served.items()}
        if actual is not None:
            record["actual"] = actual[i]
        out.append(record)
    return out


def drift(case: Case, tmp: Path, recs: list[dict[str, Any]]) -> tuple[int, dict[str, Any], dict]:
    """Write the records as one log file, run `mlops drift` with the workspace's params; return the exit
    code, summary.json and the metrics written."""
    log_dir = tmp / "predictions"
    write_log(log_dir, recs, NOW - dt.timedelta(minutes=5), per_file=len(recs))
    args = [
        "--params",
        str(case.params),
        "drift",
        "--log-dir",
        str(log_dir),
        "--reference",
        str(case.reference),
    ]
    code = cli.main([*args, "--out-dir", str(tmp / "out"), "--metrics-file", str(tmp / "drift.prom")])
    metrics = parse_metrics((tmp / "drift.prom").read_text())
    return code, strict_json(tmp / "out/summary.json"), metrics


def labels_of(case: Case, rows: pd.DataFrame) -> list[Any]:
    """The raw true labels of rows (class names, or the target's value)."""
    return case.task.decode(rows["label"].to_numpy())


# ---------------------------------------------------------------- the reference
@pytest.mark.slow
def test_reference_holds_the_tasks_prediction_columns(case):
    """reference.parquet: raw features, the label column, and the model's outputs on those rows under the
    task's prediction column names (multiclass: one probability per class; regression: the value)."""
    ref = pd.read_parquet(case.reference)
    names = case.task.prediction_column_names()
    assert list(ref.columns) == [*case.features, case.task.column, *names]
    outputs = case.model.predict_proba({n: ref[n].to_numpy() for n in case.features})
    for name, values in case.task.prediction_columns(outputs).items():
        np.testing.assert_allclose(ref[name].to_numpy(), values, rtol=0, atol=1e-9)
    if case.kind == "multiclass":
        assert names == [f"probability[{c}]" for c in case.task.classes]
        np.testing.assert_allclose(ref[names].sum(axis=1), 1.0, atol=1e-5)
        assert set(ref[case.task.column]) <= set(case.task.classes)
    else:
        assert names == ["prediction"]
        # the target's units, not the standardized training scale
        assert ref["prediction"].mean() == pytest.approx(ref[case.task.column].mean(), rel=0.15)


# ---------------------------------------------------------------- verdicts
@pytest.mark.slow
def test_unshifted_window_is_not_drift(case, tmp_path):
    rows = case.held_out
    code, summary, metrics = drift(case, tmp_path, records(case, rows, labels_of(case, rows)))
    assert code == 0, summary["message"]
    assert summary["status"] == "no_drift" and summary["drifted_features"] == [], summary["features"]
    assert summary["task"] == case.kind
    names = case.task.prediction_column_names()
    assert set(summary["predictions"]) == set(names)  # summary.json keys are sorted
    assert not any(r["drifted"] for r in summary["predictions"].values()), summary["predictions"]
    assert summary["prediction"]["drifted"] is False
    target = summary["target"]
    assert target["column"] == case.task.column and target["labelled_rows"] == len(rows)
    assert target["method"] is not None and target["drifted"] is False, target
    model = frozenset({("model", MODEL)})
    for name in names:
        key = frozenset(model | {("output", name), ("method", "wasserstein")})
        assert metrics[("mlops_drift_prediction_output_score", key)] < 0.1
        assert metrics[("mlops_drift_prediction_output_drifted", model | {("output", name)})] == 0
    assert metrics[("mlops_drift_prediction_drifted", model)] == 0
    assert metrics[("mlops_drift_target_drifted", model)] == 0
    assert metrics[("mlops_drift_labelled_rows", model)] == len(rows)
    single = [k for k in metrics if k[0] == "mlops_drift_prediction_score"]
    if case.kind == "multiclass":  # no single score for N outputs: each is in the output series
        assert single == []
    else:
        assert len(single) == 1
    report = (tmp_path / "out/report.html").read_text()
    assert all(name in report for name in names)


@pytest.mark.slow
def test_shifted_window_is_flagged_with_its_predictions_and_target(case, tmp_path):
    shift, expected = SHIFTS[case.kind]
    rows = case.held_out.copy()
    shift(rows)
    actual = shift_labels(case.task, labels_of(case, case.held_out))
    code, summary, metrics = drift(case, tmp_path, records(case, rows, actual))
    assert code == 7
    assert summary["status"] == "drift" and summary["drifted_features"] == expected, summary["features"]
    drifted = [n for n, r in summary["predictions"].items() if r["drifted"]]
    assert drifted, summary["predictions"]  # the model's outputs moved with its inputs
    assert summary["prediction"]["drifted"] is True
    if case.kind == "multiclass":
        assert sorted(summary["prediction"]["drifted_outputs"]) == sorted(drifted)
    assert summary["target"]["drifted"] is True, summary["target"]
    model = frozenset({("model", MODEL)})
    assert metrics[("mlops_drift_prediction_drifted", model)] == 1
    assert metrics[("mlops_drift_target_drifted", model)] == 1
    current, reference = summary["target"]["current"], summary["target"]["reference"]
    if case.kind == "multiclass":  # the class shares that moved
        last = case.task.classes[-1]
        assert current["class_shares"][last] > 0.6 > reference["class_shares"][last]
    else:
        assert current["mean"] > 1.3 * reference["mean"]


@pytest.mark.slow
def test_target_drift_needs_enough_labelled_rows(case, tmp_path):
    """Without `actual` on at least drift.min_rows records the target is not tested, and the summary
    says why; the verdict and prediction drift do not depend on it."""
    rows = case.held_out
    labels = labels_of(case, rows)
    recs = records(case, rows)
    for i in range(10):
        recs[i]["actual"] = labels[i]
    code, summary, metrics = drift(case, tmp_path, recs)
    assert code == 0 and summary["status"] == "no_drift"
    target = summary["target"]
    assert target["method"] is None and target["drifted"] is False and target["labelled_rows"] == 10
    assert "fewer than drift.min_rows" in target["note"]
    assert target["current"]["rows"] == 10
    model = frozenset({("model", MODEL)})
    assert metrics[("mlops_drift_labelled_rows", model)] == 10
    assert not [k for k in metrics if k[0].startswith("mlops_drift_target_")]


# ---------------------------------------------------------------- the window per task
def record(**outputs: Any) -> dict[str, Any]:
    return {"ts": stamp(NOW), "model": MODEL, "inputs": {"a": 1.0}, **outputs}


TASKS = {
    "binary": Task("binary", "y", ("No", "Yes"), "Yes"),
    "multiclass": Task("multiclass", "y", ("VF", "F", "M")),
    "regression": Task("regression", "y"),
}
GOOD = {
    "binary": {"probability": 0.25, "label": "No"},
    "multiclass": {"probabilities": [0.2, 0.5, 0.3], "label": "F"},
    "regression": {"prediction": 1234.5},
}


@pytest.mark.parametrize("kind", list(TASKS))
def test_window_turns_each_tasks_records_into_its_prediction_columns(tmp_path, kind):
    task = TASKS[kind]
    write_log(tmp_path, [record(**GOOD[kind], actual=task.classes[0] if task.classes else 99.0)], NOW)
    frame = read_window(str(tmp_path), 1, NOW, ["a"], task).frame
    assert len(frame) == 1
    expected = {
        "binary": {"probability": 0.25},
        "multiclass": {"probability[VF]": 0.2, "probability[F]": 0.5, "probability[M]": 0.3},
        "regression": {"prediction": 1234.5},
    }[kind]
    for name, value in expected.items():
        assert frame[name].dtype == np.float64 and frame[name].iloc[0] == value
    assert frame["actual"].iloc[0] == (task.classes[0] if task.classes else 99.0)
    assert frame["a"].iloc[0] == 1.0


@pytest.mark.parametrize(
    ("kind", "outputs", "reason"),
    [
        ("multiclass", {"probability": 0.3, "label": "F"}, "no `probabilities`"),
        ("multiclass", {"probabilities": [0.5, 0.5], "label": "F"}, "shape [2], expected [3]"),
        ("regression", {"probability": 0.3}, "no `prediction`"),
        ("binary", {"prediction": 3.0}, "no `probability`"),
        ("binary", {"probability": [0.3, 0.7]}, "not a prediction record"),
    ],
)
def test_a_record_without_the_tasks_output_damages_its_file(tmp_path, kind, outputs, reason):
    task = TASKS[kind]
    write_log(tmp_path, [record(**GOOD[kind])], NOW, seq=1)
    write_log(tmp_path, [record(**GOOD[kind]), record(**outputs)], NOW, seq=2)
    window = read_window(str(tmp_path), 1, NOW, ["a"], task)
    assert len(window.frame) == 1 and window.files_read == 1 and window.skipped_count == 1
    assert window.skipped[0]["reason"].startswith("line 2:") and reason in window.skipped[0]["reason"]


def test_an_empty_window_has_the_tasks_columns(tmp_path):
    frame = read_window(str(tmp_path / "none"), 1, NOW, ["a"], TASKS["multiclass"]).frame
    assert len(frame) == 0
    assert {"probability[VF]", "probability[F]", "probability[M]", "actual", "a"} <= set(frame.columns)
