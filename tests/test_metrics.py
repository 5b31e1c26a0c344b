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


# ---------------------------------------------------------------- multiclass and regression (issue 22)
@pytest.fixture(scope="module", params=[0, 1])
def multiclass_data(request):
    rng = np.random.default_rng(10 + request.param)
    n, k = [600, 2000][request.param], [3, 5][request.param]
    y = rng.integers(0, k, n)
    logits = rng.normal(size=(n, k)) + 1.5 * np.eye(k)[y]
    p = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    return y, p, k


def test_multiclass_scores_equal_sklearn(multiclass_data):
    y, p, k = multiclass_data
    classes = [f"c{i}" for i in range(k)]
    got = metrics.multiclass_scores(y, p, classes, bins=10, top_k=2)
    pred = p.argmax(axis=1)
    assert got["accuracy"] == pytest.approx(skm.accuracy_score(y, pred), abs=1e-12)
    assert got["macro_f1"] == pytest.approx(skm.f1_score(y, pred, average="macro"), abs=1e-12)
    assert got["weighted_f1"] == pytest.approx(skm.f1_score(y, pred, average="weighted"), abs=1e-12)
    assert got["log_loss"] == pytest.approx(skm.log_loss(y, p, labels=list(range(k))), abs=1e-9)
    assert got["top_k_accuracy"] == pytest.approx(
        skm.top_k_accuracy_score(y, p, k=2, labels=list(range(k))), abs=1e-12
    )
    precision = skm.precision_score(y, pred, average=None, zero_division=0)
    recall = skm.recall_score(y, pred, average=None, zero_division=0)
    f1 = skm.f1_score(y, pred, average=None, zero_division=0)
    for i, c in enumerate(classes):
        row = got["per_class"][c]
        assert row["rows"] == int((y == i).sum())
        assert (row["precision"], row["recall"], row["f1"]) == pytest.approx((precision[i], recall[i], f1[i]))
    # top-label ECE: |accuracy - confidence| per confidence bin, row-weighted
    conf, hit = p.max(axis=1), (pred == y)
    which = np.minimum((conf * 10).astype(int), 9)
    ece = sum(abs(hit[which == b].mean() - conf[which == b].mean()) * (which == b).mean() for b in set(which))
    assert got["ece"] == pytest.approx(ece, abs=1e-12)


def test_regression_scores_equal_sklearn():
    rng = np.random.default_rng(3)
    y = rng.uniform(100, 5000, 800)
    p = y + rng.normal(0, 300, 800)
    got = metrics.regression_scores(y, p)
    assert got["rmse"] == pytest.approx(np.sqrt(skm.mean_squared_error(y, p)), rel=1e-12)
    assert got["mae"] == pytest.approx(skm.mean_absolute_error(y, p), rel=1e-12)
    assert got["r2"] == pytest.approx(skm.r2_score(y, p), rel=1e-12)
    assert got["mape"] == pytest.approx(skm.mean_absolute_percentage_error(y, p), rel=1e-12)
    y[5] = 0.0  # MAPE is undefined with a zero target: null, never inf
    assert metrics.regression_scores(y, p)["mape"] is None


def test_weighted_task_metrics_equal_the_scores_on_resampled_rows(multiclass_data):
    """The paired bootstrap's weighted forms: counts w give the metric of the rows drawn w times."""
    y, p, k = multiclass_data
    rng = np.random.default_rng(0)
    w = rng.multinomial(len(y), np.full(len(y), 1 / len(y)), size=3).astype(float)
    for row in w:
        idx = np.repeat(np.arange(len(y)), row.astype(int))
        want = metrics.multiclass_scores(y[idx], p[idx], [str(i) for i in range(k)], 10, 2)
        for name in metrics.MULTICLASS_METRICS:
            got = metrics.weighted(name, y, p, row[None, :], 0.5, 10, 2)[0]
            assert got == pytest.approx(want[name], abs=1e-9), name
    t = rng.uniform(0, 10, 300)
    q = t + rng.normal(0, 1, 300)
    row = rng.multinomial(300, np.full(300, 1 / 300)).astype(float)
    idx = np.repeat(np.arange(300), row.astype(int))
    want = metrics.regression_scores(t[idx], q[idx])
    for name in metrics.REGRESSION_METRICS:
        assert metrics.weighted(name, t, q, row[None, :], 0.5, 10)[0] == pytest.approx(want[name], rel=1e-9)
