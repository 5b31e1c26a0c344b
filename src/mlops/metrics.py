"""metrics: the classification metrics evaluate reports and the gate checks (one definition).

`scores(y, p, threshold, bins)` takes 0/1 labels (see `mlops.labels`) and positive-class probabilities.
Undefined values (ROC AUC on one class) are None, so the JSON written from them stays strict.
`mlops.bootstrap` computes the same metrics as weighted sums for whole blocks of resamples; its tests
check it against this module.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn import metrics as skm

LOWER_IS_BETTER = frozenset({"log_loss", "ece"})


def expected_calibration_error(y: np.ndarray, p: np.ndarray, bins: int) -> float:
    """ECE: row-weighted mean |observed positive rate - mean predicted probability| over equal-width bins."""
    which = np.minimum((p * bins).astype(int), bins - 1)
    total = 0.0
    for b in range(bins):
        mask = which == b
        if mask.any():
            total += mask.sum() * abs(y[mask].mean() - p[mask].mean())
    return float(total / len(y))


def scores(y: np.ndarray, p: np.ndarray, threshold: float, bins: int) -> dict[str, Any]:
    """Classification metrics for labels `y` (0/1) and positive-class probabilities `p`."""
    pred = (p >= threshold).astype(int)
    both = len(np.unique(y)) == 2
    return {
        "rows": int(len(y)),
        "positive_rate": float(y.mean()) if len(y) else None,
        "roc_auc": float(skm.roc_auc_score(y, p)) if both else None,
        "pr_auc": float(skm.average_precision_score(y, p)) if both else None,
        "f1": float(skm.f1_score(y, pred, zero_division=0)),
        "precision": float(skm.precision_score(y, pred, zero_division=0)),
        "recall": float(skm.recall_score(y, pred, zero_division=0)),
        "accuracy": float(skm.accuracy_score(y, pred)),
        "log_loss": float(skm.log_loss(y, np.clip(p, 1e-7, 1 - 1e-7), labels=[0, 1])),
        "ece": expected_calibration_error(y, p, bins),
    }
