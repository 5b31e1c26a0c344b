"""Task types (params.yaml `schema.task`): the label rules, the per-task stages and the errors a team meets.

Each stage runs on the public multiclass and regression tables of tests/task_tables.py (the
`task_pipeline` fixture) and on small generated tables for the error cases: a label with one class, a
value outside `classes`, a non-numeric or non-finite regression target and a class missing from a split
exit 3 naming the column, the values and the rule; a params combination that does not fit the task
exits 2 naming the key.
"""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest
import task_tables
import yaml

from mlops import cli, scorer
from mlops.config import load_params
from mlops.errors import ConfigError
from mlops.params_io import read_yaml
from mlops.task import Task

from conftest import new_workspace


def edited(ws, kind: str, change=None):
    data = read_yaml(ws.params)
    task_tables.EDITS[kind](data)
    if change:
        change(data)
    ws.params.write_text(yaml.safe_dump(data, sort_keys=False))
    return ws


# ---------------------------------------------------------------- the stages per task
# slow: the task_pipeline fixture trains on hpc_data and diamonds (~20 s for both)
@pytest.mark.slow
def test_multiclass_pipeline_reports_per_class_metrics_and_passes_its_gate(task_pipeline, tmp_path):
    ws = task_pipeline("multiclass")
    meta = json.loads((ws.models / "model.json").read_text())
    assert meta["task"] == "multiclass-classification" and meta["architecture"]["outputs"] == 4
    assert meta["label"] == {"column": "runtime", "classes": ["VF", "F", "M", "L"]}
    assert meta["onnx"]["output"] == "probabilities"
    metrics = json.loads(ws.metrics.read_text())
    test = metrics["test"]
    assert metrics["task"] == "multiclass" and set(test["per_class"]) == {"VF", "F", "M", "L"}
    assert (
        0.6 < test["accuracy"] <= 1
        and 0 < test["macro_f1"] <= 1
        and test["top_k_accuracy"] >= test["accuracy"]
    )
    assert {p.name for p in ws.plots.iterdir()} == {"confusion.json", "calibration.json", "roc.json"}
    confusion = json.loads((ws.plots / "confusion.json").read_text())
    assert {r["actual"] for r in confusion} == {"VF", "F", "M", "L"} and len(confusion) == test["rows"]
    # the served model (ONNX Runtime) and the torch network agree; rows are probability vectors
    model = scorer.load_onnx(ws.models)
    rows = pd.read_parquet(ws.raw).head(50)
    p = model.predict_proba(rows)
    assert p.shape == (50, 4) and np.allclose(p.sum(axis=1), 1, atol=1e-5)
    from mlops import model as model_lib

    assert np.allclose(model_lib.load(ws.models).predict_proba(rows), p, atol=1e-5)
    assert set(model.predict_label(p)) <= {"VF", "F", "M", "L"}
    gate = tmp_path / "gate.json"
    code = ws.mlops(
        *ws.stage_args("gate", out=gate, markdown=tmp_path / "gate.md", timings=tmp_path / "t.json")
    )
    verdict = json.loads(gate.read_text())
    assert code == 0 and verdict["passed"], verdict["failed"]
    ids = [r["id"] for r in verdict["rules"]]
    assert "classes.min.recall[L]" in ids and "metrics.min.macro_f1" in ids


# slow: the task_pipeline fixture trains on hpc_data and diamonds (~20 s for both)
@pytest.mark.slow
def test_regression_pipeline_predicts_in_the_targets_units(task_pipeline, tmp_path):
    ws = task_pipeline("regression")
    meta = json.loads((ws.models / "model.json").read_text())
    assert meta["task"] == "regression" and meta["loss"] == "huber" and meta["onnx"]["output"] == "prediction"
    scale = meta["label"]["scale"]
    raw = pd.read_parquet(ws.raw)
    assert 3000 < scale["mean"] < 5000 and 3000 < scale["std"] < 5000  # diamonds' price, in USD
    metrics = json.loads(ws.metrics.read_text())["test"]
    assert metrics["r2"] > 0.9 and metrics["rmse"] < 1500 and metrics["mae"] < metrics["rmse"]
    model = scorer.load_onnx(ws.models)
    rows = raw.sample(200, random_state=0)
    pred = model.predict(rows)
    assert pred.shape == (200,)
    assert np.median(np.abs(pred - rows["price"].to_numpy()) / rows["price"].to_numpy()) < 0.25
    with pytest.raises(ValueError, match="regression model"):
        model.predict_label(pred)
    assert {p.name for p in ws.plots.iterdir()} == {"predicted.json", "residuals.json"}
    gate = tmp_path / "gate.json"
    code = ws.mlops(
        *ws.stage_args("gate", out=gate, markdown=tmp_path / "gate.md", timings=tmp_path / "t.json")
    )
    assert code == 0 and json.loads(gate.read_text())["passed"]


def test_binary_demo_keeps_its_outputs(pipeline):
    """The demo stays binary churn: 0/1 labels, one probability per row, the binary metrics."""
    meta = json.loads((pipeline.models / "model.json").read_text())
    assert meta["task"] == "binary-classification" and "outputs" not in meta["architecture"]
    assert meta["onnx"]["output"] == "probability"
    test = json.loads(pipeline.metrics.read_text())["test"]
    assert {"roc_auc", "pr_auc", "ece", "positive_rate"} <= set(test) and "per_class" not in test


# ---------------------------------------------------------------- clear errors: exit 3 (data)
def small_table(kind: str, n: int = 1200, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 10, n)
    frame = pd.DataFrame({"row_id": np.arange(n), "x": x, "c": rng.choice(["a", "b"], n)})
    if kind == "regression":
        frame["y"] = 3 * x + rng.normal(0, 1, n)
    else:
        frame["y"] = np.where(x < 3, "low", np.where(x < 6, "mid", "high"))
    return frame


def small_params(ws, kind: str, table: pd.DataFrame, tmp_path, label: dict | None = None):
    path = tmp_path / "table.csv"
    table.to_csv(path, index=False)
    data = read_yaml(ws.params)
    data["ingest"].update(source="file", file={"uri": str(path), "format": "csv"}, rename={})
    data["schema"] = {
        "id": "row_id",
        "min_rows": 100,
        "task": kind,
        "label": label
        or ({"column": "y"} if kind == "regression" else {"column": "y", "classes": ["low", "mid", "high"]}),
        "numeric": {"x": {"min": 0, "max": 10, "nullable": False, "integer": False}},
        "categorical": {"c": {"categories": ["a", "b"], "nullable": False}},
    }
    data["evaluate"]["slices"] = [{"column": "c"}]
    data["expectations"] = {"directional": [], "invariance": [], "minimum": []}
    metric = "rmse" if kind == "regression" else "accuracy"
    data["gate"]["metrics"] = (
        {"min": {}, "max": {metric: 100.0}} if kind == "regression" else {"min": {metric: 0.1}, "max": {}}
    )
    data["gate"]["slices"] = {"min": {}}
    data["champion"]["max_regression"] = {metric: 0.5}
    ws.params.write_text(yaml.safe_dump(data, sort_keys=False))


def run_until(ws, last: str) -> int:
    for stage in ("ingest", "validate", "featurize", "train", "evaluate", "gate"):
        code = ws.mlops(*ws.stage_args(stage))
        if code or stage == last:
            return code
    return 0


@pytest.mark.parametrize(
    ("kind", "change", "message"),
    [
        ("multiclass", lambda t: t.assign(y="low"), r"label_classes\[y: >=2 of \['low', 'mid', 'high'\]\]"),
        (
            "multiclass",
            lambda t: t.assign(y=t["y"].where(t.index != 7, "huge")),
            r"column 'y' fails label_values.*'huge'",
        ),
        (
            "regression",
            lambda t: t.assign(y=t["y"].astype(object).where(t.index != 3, "cheap")),
            r"column 'y' fails numeric_dtype",
        ),
        (
            "regression",
            lambda t: t.assign(y=t["y"].where(t.index != 3, np.inf)),
            r"column 'y' fails finite.*inf",
        ),
        (
            "regression",
            lambda t: t.assign(y=t["y"].where(t.index != 3, np.nan)),
            r"column 'y' fails not_nullable",
        ),
    ],
)
def test_a_label_that_does_not_fit_the_task_exits_3_naming_column_values_and_rule(
    kind, change, message, tmp_path, capsys
):
    ws = new_workspace(tmp_path / "ws")
    small_params(ws, kind, change(small_table(kind)), tmp_path)
    assert run_until(ws, "validate") == 3
    err = capsys.readouterr().err
    assert re.search(message, err), err[-2000:]
    assert not (ws.processed / "train.parquet").exists()  # nothing downstream written


def test_a_class_missing_from_a_split_exits_3_naming_the_split_and_class(tmp_path, capsys):
    ws = new_workspace(tmp_path / "ws")
    table = small_table("multiclass")
    table.loc[table.index[:2], "y"] = "rare"  # two rows: some split gets none of them
    small_params(
        ws, "multiclass", table, tmp_path, {"column": "y", "classes": ["low", "mid", "high", "rare"]}
    )
    assert run_until(ws, "featurize") == 3
    err = capsys.readouterr().err
    assert "no rows of class ['rare'] of label 'y'" in err and " split" in err, err[-2000:]
    assert not any((ws.processed / f"{s}.parquet").exists() for s in ("train", "valid", "test"))


def test_task_encode_errors_name_values_and_rule():
    t = Task("multiclass", "grade", ("A", "B", "C"))
    assert t.encode(pd.Series(["C", "A"]), "t").tolist() == [2, 0]
    with pytest.raises(Exception, match=r"grade.*\['Z'\] are not in schema.label.classes"):
        t.encode(pd.Series(["A", "Z"]), "t: label 'grade'")
    r = Task("regression", "price")
    with pytest.raises(Exception, match=r"must be finite; 1 rows hold \['nan'\]"):
        r.encode(pd.Series([1.0, np.nan]), "t")
    with pytest.raises(Exception, match=r"must be numeric.*\['cheap'\]"):
        r.encode(pd.Series(["1", "cheap"], dtype=object), "t")


# ---------------------------------------------------------------- clear errors: exit 2 (params)
@pytest.mark.parametrize(
    ("kind", "change", "key"),
    [
        ("regression", lambda p: p["gate"]["metrics"]["min"].update(roc_auc=0.8), "gate.metrics.min.roc_auc"),
        ("regression", lambda p: p["gate"]["classes"]["min"].update(recall=0.5), "gate.classes.min.recall"),
        ("multiclass", lambda p: p["gate"]["slices"]["min"].update(rmse=3.0), "gate.slices.min.rmse"),
        (
            "multiclass",
            lambda p: p["champion"]["max_regression"].update(pr_auc=0.1),
            "champion.max_regression.pr_auc",
        ),
        ("multiclass", lambda p: p["train"].update(loss="mse"), "train.loss"),
        ("regression", lambda p: p["train"].update(loss="cross_entropy"), "train.loss"),
        ("regression", lambda p: p["schema"]["label"].update(classes=["a", "b"]), "schema.label.classes"),
        ("multiclass", lambda p: p["schema"]["label"].update(positive="VF"), "schema.label.positive"),
        ("multiclass", lambda p: p["schema"]["label"].pop("classes"), "schema.label.classes"),
    ],
)
def test_a_params_combination_that_does_not_fit_the_task_exits_2_naming_the_key(
    kind, change, key, tmp_path, capsys
):
    ws = edited(new_workspace(tmp_path / "ws"), kind, change)
    with pytest.raises(ConfigError, match=key.replace(".", r"\.")):
        load_params(ws.params)
    assert cli.main(["--params", str(ws.params), "check-params"]) == 2
    assert key in capsys.readouterr().err


# slow: the task_pipeline fixture trains on hpc_data and diamonds (~20 s for both)
@pytest.mark.slow
def test_the_gate_refuses_another_tasks_metric_with_exit_2(task_pipeline, tmp_path, capsys):
    """The gate reads only its section, so it checks the bounds against the candidate's task itself."""
    src = task_pipeline("regression")
    ws = new_workspace(tmp_path / "ws")
    data = read_yaml(src.params)
    data["gate"]["metrics"]["min"]["roc_auc"] = 0.8
    ws.params.write_text(yaml.safe_dump(data, sort_keys=False))
    args = src.stage_args(
        "gate", out=tmp_path / "g.json", markdown=tmp_path / "g.md", timings=tmp_path / "t.json"
    )
    assert cli.main(["--params", str(ws.params), *args]) == 2
    assert "gate.metrics.min.roc_auc: not a regression metric" in capsys.readouterr().err
    assert not (tmp_path / "g.json").exists()


def test_a_label_coded_as_integers_names_its_classes_as_params_lists_them(tmp_path, capsys):
    """Grades 1-3 stored as integers, `classes: [1, 2, 3]` in params.yaml: validate, featurize and
    train take them as the classes "1", "2", "3" (the model's labels are those names)."""
    ws = new_workspace(tmp_path / "ws")
    table = small_table("multiclass")
    table["y"] = table["y"].map({"low": 1, "mid": 2, "high": 3})
    small_params(ws, "multiclass", table, tmp_path, {"column": "y", "classes": [1, 2, 3]})
    assert run_until(ws, "evaluate") == 0, capsys.readouterr().err[-2000:]
    meta = json.loads((ws.models / "model.json").read_text())
    assert meta["label"]["classes"] == ["1", "2", "3"]
    confusion = json.loads((ws.plots / "confusion.json").read_text())
    assert {r["actual"] for r in confusion} == {"1", "2", "3"}
    bad = table.assign(y=table["y"].where(table.index != 5, 7))
    ws2 = new_workspace(tmp_path / "ws2")
    (tmp_path / "x").mkdir()
    small_params(ws2, "multiclass", bad, tmp_path / "x", {"column": "y", "classes": [1, 2, 3]})
    assert run_until(ws2, "validate") == 3
    assert re.search(r"column 'y' fails label_values.*7", capsys.readouterr().err)
