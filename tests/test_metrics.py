"""mlops.metrics (numpy only) against scikit-learn, the reference it replaced in the pipeline stages:
the same scores, ROC and precision-recall points, on data with tied scores, and the one-class cases."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn import metrics as skm

from mlops import metrics


@pytest.fixture(scope="module", params=[0, 1, 2])
def data(request):
    rng = np.random.default_rng(request.param)
    n = [700, 53, 1500][request.param]
    y = rng.integers(0, 2, n)
    p = np.clip(0.35 * y + rng.uniform(0, 0.65, n), 0, 1)
    p[:: 3 + request.param] = np.round(p[:: 3 + request.param], 1)  # ties, as real scores have
    return y, p


def test_scores_equal_sklearn(data):
    y, p = data
    got = metrics.scores(y, p, 0.5, 10)
    pred = (p >= 0.5).astype(int)
    want = {
        "roc_auc": skm.roc_auc_score(y, p),
        "pr_auc": skm.average_precision_score(y, p),
        "f1": skm.f1_score(y, pred, zero_division=0),
        "precision": skm.precision_score(y, pred, zero_division=0),
        "recall": skm.recall_score(y, pred, zero_division=0),
        "accuracy": skm.accuracy_score(y, pred),
        "log_loss": skm.log_loss(y, np.clip(p, 1e-7, 1 - 1e-7), labels=[0, 1]),
    }
    for name, value in want.items():
        assert got[name] == pytest.approx(value, abs=1e-12), name
    assert got["rows"] == len(y) and got["positive_rate"] == pytest.approx(y.mean())


def test_ece_is_the_row_weighted_calibration_gap():
    y = np.array([0, 1, 1, 0, 1])
    p = np.array([0.05, 0.15, 0.95, 0.9, 1.0])  # bins of 0.5: [0.05, 0.15] and [0.95, 0.9, 1.0]
    want = (2 * abs(0.5 - 0.1) + 3 * abs(2 / 3 - 0.95)) / 5
    assert metrics.expected_calibration_error(y, p, 2) == pytest.approx(want)
    assert metrics.scores(y, p, 0.5, 2)["ece"] == pytest.approx(want)


def test_curves_equal_sklearn(data):
    y, p = data
    for ours, theirs in zip(metrics.roc_curve(y, p), skm.roc_curve(y, p), strict=True):
        np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-12)
    for ours, theirs in zip(metrics.pr_curve(y, p), skm.precision_recall_curve(y, p), strict=True):
        np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-12)


def test_one_class_leaves_rank_metrics_undefined():
    s = metrics.scores(np.ones(5, dtype=int), np.full(5, 0.9), 0.5, 10)
    assert s["roc_auc"] is None and s["pr_auc"] is None
    assert s["recall"] == 1.0 and s["precision"] == 1.0 and s["accuracy"] == 1.0
    none_predicted = metrics.scores(np.array([0, 1, 0]), np.array([0.1, 0.2, 0.3]), 0.5, 10)
    assert none_predicted["precision"] == 0.0 and none_predicted["f1"] == 0.0  # zero_division=0


def test_unknown_metric_names_the_choices():
    with pytest.raises(ValueError, match="unknown metric 'auc'.*roc_auc"):
        metrics.weighted("auc", np.array([0, 1]), np.array([0.2, 0.8]), np.ones((1, 2)), 0.5, 10)
