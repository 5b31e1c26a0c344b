"""`mlops report` and the model card per task on the `task_pipeline` models (multiclass: hpc_data,
regression: diamonds): the test metrics, the per-class table, the slices and the plots evaluate wrote for
the task; the demo's binary tables are unchanged; the labelled test rows a version carries keep the
task's encoded label."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from mlops import model as model_lib
from mlops import registry
from mlops import report as report_lib
from mlops.labels import LABEL
from mlops.review_comment import MARKER

from .conftest import copy_workspace

FORGE_VARS = (
    "GITHUB_ACTIONS",
    "GITLAB_CI",
    "MLOPS_FORGE",
    "GITHUB_BASE_REF",
    "CI_MERGE_REQUEST_TARGET_BRANCH_NAME",
)


def render(ws, monkeypatch) -> str:
    """`mlops report` on a workspace outside git (the diffs are unavailable), no production record."""
    for var in FORGE_VARS:
        monkeypatch.delenv(var, raising=False)
    monkeypatch.chdir(ws.root)
    out = ws.root / "reports/review/report.md"
    args = ["report", "--gate", str(ws.root / "reports/gate.json"), "--metrics", str(ws.metrics)]
    args += ["--plots-dir", str(ws.plots), "--model-dir", str(ws.models), "--data", str(ws.raw)]
    args += ["--test", str(ws.processed / "test.parquet"), "--out", str(out), "--target", "main"]
    args += ["--champion", str(ws.root / "deploy/envs/production/model.yaml")]
    assert ws.mlops(*args) == 0
    text = out.read_text()
    assert text.startswith(MARKER) and "champion: none in production" in text
    return text


def cell(value) -> str:
    return report_lib._f(value)


def plots_of(ws, text: str) -> set[str]:
    """The PNG plots written next to the report, each linked from it."""
    found = set()
    for name in ("roc", "pr", "calibration", "confusion", "predicted", "residuals"):
        png = ws.root / f"reports/review/plots/{name}.png"
        if png.exists():
            assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
            assert f"- [{name}](plots/{name}.png)" in text
            found.add(name)
    return found


@pytest.mark.slow
def test_multiclass_report_has_test_per_class_and_slice_tables(task_pipeline, tmp_path, monkeypatch):
    ws = copy_workspace(task_pipeline("multiclass"), tmp_path / "ws")
    text = render(ws, monkeypatch)
    metrics = json.loads(ws.metrics.read_text())
    test = metrics["test"]
    meta = model_lib.read_metadata(ws.models)
    classes = meta["label"]["classes"]
    assert "### Test metrics (multiclass)" in text
    for label, key in (("accuracy", "accuracy"), ("macro F1", "macro_f1"), ("log loss", "log_loss")):
        assert f"| {label} | {cell(test[key])} |" in text, label
    assert f"| top-{test['top_k']} accuracy | {cell(test['top_k_accuracy'])} |" in text
    # the per-class table, in the model's class order
    positions = [text.index(f"\n| {name} | ") for name in classes]
    assert positions == sorted(positions)
    for name in classes:
        s = test["per_class"][name]
        expected = (
            f"| {name} | {cell(s['precision'])} | {cell(s['recall'])} | {cell(s['f1'])} | {s['rows']} |"
        )
        assert expected in text, name
    # the slices: size, accuracy and F1 where measured, class shares always
    assert "| slice | rows | accuracy | macro_f1 | weighted_f1 | log_loss | class shares |" in text
    for group, values in metrics["slices"].items():
        for key, s in values.items():
            line = next(x for x in text.splitlines() if x.startswith(f"| {group}={key} | {s['rows']} |"))
            assert cell(s.get("accuracy")) in line
            shares = " · ".join(f"{c} {s['class_rates'][c]:.2f}" for c in classes)
            assert line.endswith(f"| {shares} |"), line
    assert plots_of(ws, text) == {"roc", "calibration", "confusion"}
    assert f"MLP {meta['architecture']['input_dim']}→64→32→{len(classes)} (relu)" in text
    assert f"multiclass `{meta['label']['column']}` ({', '.join(classes)}; " in text
    assert "positive_rate" not in text and "decision threshold" not in text


@pytest.mark.slow
def test_regression_report_has_test_metrics_and_slices_with_mean_target(task_pipeline, tmp_path, monkeypatch):
    ws = copy_workspace(task_pipeline("regression"), tmp_path / "ws")
    text = render(ws, monkeypatch)
    metrics = json.loads(ws.metrics.read_text())
    test = metrics["test"]
    assert "### Test metrics (regression)" in text and "### Per class" not in text
    for label, key in (("RMSE", "rmse"), ("MAE", "mae"), ("R²", "r2"), ("MAPE", "mape")):
        assert f"| {label} | {cell(test[key])} |" in text, label
    assert "| slice | rows | mean_target | rmse | mae | r2 | mape |" in text
    for group, values in metrics["slices"].items():
        for key, s in values.items():
            mean = s.get("mean_target", s.get("mean"))
            assert f"| {group}={key} | {s['rows']} | {cell(mean)} |" in text, (group, key)
    assert plots_of(ws, text) == {"predicted", "residuals"}
    meta = model_lib.read_metadata(ws.models)
    assert f"regression of `{meta['label']['column']}` (predicted in the target's units)" in text
    assert "decision threshold" not in text and "positive_rate" not in text


# ---------------------------------------------------------------- the tables alone (no pipeline)
def test_binary_tables_are_the_demos():
    """The binary slice table and model card keep the demo's format (the report is byte-identical)."""
    slices = {"contract": {"One year": {"rows": 288, "positive_rate": 0.13, "roc_auc": 0.67, "f1": 0.0}}}
    assert report_lib.slice_table(slices) == [
        "| slice | rows | positive_rate | roc_auc | log_loss | f1 |",
        "|---|---|---|---|---|---|",
        "| contract=One year | 288 | 0.1300 | 0.6700 | – | 0.0000 |",
    ]
    meta = {
        "name": "churn-mlp",
        "task": "binary-classification",
        "label": {"column": "churn", "classes": ["No", "Yes"], "positive": "Yes"},
        "decision_threshold": 0.5,
        "architecture": {"input_dim": 40, "hidden": [64, 32], "activation": "relu"},
        "weights": {"sha256": "ab"},
    }
    card = report_lib.model_card(meta, {}, {"intended_use": "u", "limits": "l"})
    assert card[0] == "- **Model**: `churn-mlp`, MLP 40→64→32→1 (relu), decision threshold 0.5"


def test_small_slices_show_their_target_summary():
    """A slice under evaluate.min_slice_rows has only Task.target_summary: the regression mean becomes
    the mean target, the multiclass class shares are shown in class order."""
    reg = report_lib.slice_table({"cut": {"Fair": {"rows": 3, "mean": 4100.5, "std": 20.0}}}, "regression")
    assert reg[-1] == "| cut=Fair | 3 | 4100.5000 | – | – | – | – |"
    shares = {"F": 0.2, "L": 0.0, "M": 0.2, "VF": 0.6}
    mc = report_lib.slice_table(
        {"day": {"Sat": {"rows": 5, "class_rates": shares}}}, "multiclass", ["VF", "F", "M", "L"]
    )
    assert mc[-1] == "| day=Sat | 5 | – | – | – | – | VF 0.60 · F 0.20 · M 0.20 · L 0.00 |"


# ---------------------------------------------------------------- the registry's tables per task
@pytest.mark.slow
@pytest.mark.parametrize("kind", ["multiclass", "regression"])
def test_evaluation_rows_keep_the_tasks_encoded_label(task_pipeline, kind):
    """evaluation.parquet (what `mlops promote` scores) holds the test rows' raw columns and the encoded
    label featurize wrote: the class index (multiclass), the target's value (regression)."""
    ws = task_pipeline(kind)
    model = model_lib.load(ws.models)
    rows = registry.evaluation_rows(model, ws.raw, ws.processed / "test.parquet")
    test = pd.read_parquet(ws.processed / "test.parquet")
    assert list(rows[LABEL]) == list(test[LABEL]) and rows[LABEL].dtype == test[LABEL].dtype
    assert set(pd.read_parquet(ws.raw).columns) <= set(rows.columns)
    raw_label = rows[model.task.column]
    if kind == "multiclass":
        assert rows[LABEL].dtype.kind == "i"
        assert [model.task.classes[i] for i in rows[LABEL]] == list(raw_label)
    else:
        assert rows[LABEL].dtype == np.float64
        np.testing.assert_array_equal(rows[LABEL].to_numpy(), raw_label.to_numpy(dtype=np.float64))
