"""The vectorised weighted metrics of the paired bootstrap agree with evaluate.scores and sklearn."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn import metrics as skm

from mlops import paired_bootstrap
from mlops.metrics import METRICS
from mlops.stages.evaluate import scores


@pytest.fixture(scope="module")
def data():
    rng = np.random.default_rng(3)
    y = rng.integers(0, 2, 800)
    p = np.clip(0.3 * y + rng.uniform(0, 0.7, 800), 0, 1)
    p[::7] = np.round(p[::7], 1)  # ties, as real scores have
    return y, p, rng


@pytest.mark.parametrize("name", METRICS)
def test_unit_weights_equal_evaluate_scores(data, name):
    y, p, _ = data
    got = paired_bootstrap.weighted(name, y, p, np.ones((1, len(y))), 0.5, 10)[0]
    assert got == pytest.approx(scores(y, p, 0.5, 10)[name], abs=1e-9)


@pytest.mark.parametrize("name", ["roc_auc", "pr_auc", "log_loss", "f1", "precision", "recall", "accuracy"])
def test_resample_counts_equal_sklearn_sample_weight(data, name):
    y, p, rng = data
    w = rng.multinomial(len(y), np.full(len(y), 1 / len(y)), size=3).astype(float)
    pred = (p >= 0.5).astype(int)
    ref = {
        "roc_auc": lambda s: skm.roc_auc_score(y, p, sample_weight=s),
        "pr_auc": lambda s: skm.average_precision_score(y, p, sample_weight=s),
        "log_loss": lambda s: skm.log_loss(y, np.clip(p, 1e-7, 1 - 1e-7), sample_weight=s),
        "f1": lambda s: skm.f1_score(y, pred, sample_weight=s, zero_division=0),
        "precision": lambda s: skm.precision_score(y, pred, sample_weight=s, zero_division=0),
        "recall": lambda s: skm.recall_score(y, pred, sample_weight=s, zero_division=0),
        "accuracy": lambda s: skm.accuracy_score(y, pred, sample_weight=s),
    }[name]
    got = paired_bootstrap.weighted(name, y, p, w, 0.5, 10)
    np.testing.assert_allclose(got, [ref(row) for row in w], atol=1e-9)


def test_one_class_resample_is_undefined_not_a_number():
    y = np.array([1, 1, 0])
    w = np.array([[2.0, 1.0, 0.0]])
    assert np.isnan(paired_bootstrap.weighted("roc_auc", y, np.array([0.9, 0.8, 0.1]), w, 0.5, 10)[0])


def test_paired_differences_are_seeded_and_zero_for_identical_models(data):
    y, p, _ = data
    a = paired_bootstrap.paired_differences(y, p, p, {"roc_auc": (0.5, 0.5)}, 300, 7, 10)
    assert len(a["roc_auc"]) == 300 and not a["roc_auc"].any()
    q = np.clip(p + 0.1 * np.sin(np.arange(len(p))), 0, 1)
    b1 = paired_bootstrap.paired_differences(y, q, p, {"log_loss": (0.5, 0.5)}, 300, 7, 10)
    b2 = paired_bootstrap.paired_differences(y, q, p, {"log_loss": (0.5, 0.5)}, 300, 7, 10)
    np.testing.assert_array_equal(b1["log_loss"], b2["log_loss"])
