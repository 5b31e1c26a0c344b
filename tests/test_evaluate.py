"""evaluate: metric values, strict JSON, slices and plot files DVC can render."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
from sklearn.metrics import roc_auc_score

from mlops import labels
from mlops.stages import evaluate


def strict_load(path):
    def reject(token):
        raise AssertionError(f"{path}: non-strict JSON constant {token}")

    return json.loads(path.read_text(), parse_constant=reject)


def n_test_rows(pipeline) -> int:
    return json.loads((pipeline.processed / "preprocess.json").read_text())["splits"]["test"]["rows"]


def test_demo_metrics_meet_the_quality_bar(pipeline):
    m = strict_load(pipeline.metrics)["test"]
    assert m["rows"] == n_test_rows(pipeline)
    assert m["roc_auc"] >= 0.80
    assert set(m) >= {"roc_auc", "pr_auc", "f1", "precision", "recall", "accuracy", "log_loss", "ece"}
    assert 0 <= m["ece"] < 0.1 and 0 < m["log_loss"] < 0.6


def test_slices_cover_the_n_test_rows(pipeline):
    result = strict_load(pipeline.metrics)
    assert set(result["slices"]) == {"contract", "internet_service", "tenure_band"}
    for name, groups in result["slices"].items():
        assert sum(g["rows"] for g in groups.values()) == result["test"]["rows"], name
    assert set(result["slices"]["tenure_band"]) == {"[0, 12)", "[12, 24)", "[24, 48)", "[48, 120)"}
    # churn falls with contract length in the data, and the slice table shows it
    rates = {k: v["positive_rate"] for k, v in result["slices"]["contract"].items()}
    assert rates["Month-to-month"] > rates["One year"] > rates["Two year"]


def test_plot_files_are_strict_json_with_the_declared_fields(pipeline):
    roc = strict_load(pipeline.plots / "roc.json")
    assert roc[0]["threshold"] is None  # roc_curve's +inf threshold, written as null
    assert {"fpr", "tpr"} <= set(roc[0]) and roc[-1]["fpr"] == roc[-1]["tpr"] == 1.0
    assert {"recall", "precision"} == set(strict_load(pipeline.plots / "pr.json")[0])
    confusion = strict_load(pipeline.plots / "confusion.json")
    assert len(confusion) == n_test_rows(pipeline) and set(confusion[0]) == {"actual", "predicted"}
    cal = strict_load(pipeline.plots / "calibration.json")
    assert sum(b["rows"] for b in cal) == n_test_rows(pipeline)


def test_scores_against_sklearn_and_edge_cases():
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 500)
    p = np.clip(y * 0.6 + rng.random(500) * 0.4, 0, 1)
    s = evaluate.scores(y, p, 0.5, 10)
    assert s["roc_auc"] == pytest.approx(roc_auc_score(y, p))
    one_class = evaluate.scores(np.ones(5, dtype=int), np.full(5, 0.9), 0.5, 10)
    assert one_class["roc_auc"] is None and one_class["recall"] == 1.0


def test_expected_calibration_error():
    y = np.array([0, 0, 1, 1])
    assert evaluate.expected_calibration_error(y, np.array([0.0, 0.0, 1.0, 1.0]), 10) == 0.0
    assert evaluate.expected_calibration_error(y, np.array([0.5, 0.5, 0.5, 0.5]), 10) == 0.0  # calibrated
    assert evaluate.expected_calibration_error(y, np.array([0.9, 0.9, 0.9, 0.9]), 10) == pytest.approx(0.4)
    assert evaluate.expected_calibration_error(y, np.array([0.1, 0.2, 0.7, 0.8]), 2) == pytest.approx(
        (2 * 0.15 + 2 * 0.25) / 4
    )


@pytest.mark.parametrize("classes", [["No", "Yes"], ["Yes", "No"]], ids=["positive-last", "positive-first"])
def test_confusion_matrix_names_the_positive_class_wherever_it_is_listed(classes):
    """y = 1 is `positive` whatever the order of the classes: the matrix must not swap them."""
    y = np.array([1, 1, 0, 0])
    p = np.array([0.9, 0.2, 0.1, 0.8])
    rows = evaluate.plot_data(y, p, 0.5, classes, "Yes", 10)["confusion"]
    assert rows == [
        {"actual": "Yes", "predicted": "Yes"},
        {"actual": "Yes", "predicted": "No"},
        {"actual": "No", "predicted": "No"},
        {"actual": "No", "predicted": "Yes"},
    ]


def test_one_label_mapping():
    assert labels.negative_class(["Yes", "No"], "Yes") == labels.negative_class(["No", "Yes"], "Yes") == "No"
    assert labels.to_binary(["good", "bad", "good"], "bad").tolist() == [0, 1, 0]
    assert labels.predict([0.7, 0.2], 0.5, ["bad", "good"], "bad") == ["bad", "good"]
    with pytest.raises(ValueError, match="two distinct classes"):
        labels.negative_class(["a", "a"], "a")


def test_null_categorical_values_form_their_own_slice():
    import pandas as pd

    keys = evaluate.slice_keys(pd.DataFrame({"c": ["a", None, "b", float("nan")]}), "c", None)
    assert keys.tolist() == ["a", evaluate.MISSING, "b", evaluate.MISSING]


def test_evaluate_scores_the_served_onnx_export_without_torch(pipeline, params, tmp_path):
    """`serve.backend: onnx` (the default): evaluate scores models/model.onnx on ONNX Runtime in a process
    that never imports torch, and its metrics equal the torch network's within float32 rounding."""
    probe = (
        "import json, sys\nfrom pathlib import Path\nfrom mlops.stages import evaluate\n"
        "from mlops.config import load_params\n"
        f"p = load_params(Path({str(pipeline.params)!r}))\n"
        f"r = evaluate.run(p.evaluate, Path({str(pipeline.models)!r}), Path({str(pipeline.raw)!r}), "
        f"Path({str(pipeline.processed / 'test.parquet')!r}), Path({str(tmp_path / 'onnx.json')!r}), "
        f"Path({str(tmp_path / 'plots')!r}), backend='onnx')\n"
        "print(json.dumps(['torch' in sys.modules, 'onnxruntime' in sys.modules]))"
    )
    proc = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == [False, True]
    on_torch = evaluate.run(
        params.evaluate,
        pipeline.models,
        pipeline.raw,
        pipeline.processed / "test.parquet",
        tmp_path / "torch.json",
        tmp_path / "plots-torch",
        backend="torch",
    )["test"]
    on_onnx = strict_load(tmp_path / "onnx.json")["test"]
    assert on_onnx["rows"] == on_torch["rows"]
    for name in ("roc_auc", "pr_auc", "log_loss", "ece", "f1"):
        assert abs(on_onnx[name] - on_torch[name]) < 1e-5, name
