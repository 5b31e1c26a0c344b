"""metrics: the classification metrics evaluate reports and the gate checks (one definition, numpy only).

`scores(y, p, threshold, bins)` takes 0/1 labels (see `mlops.labels`) and positive-class probabilities.
Undefined values (ROC AUC on one class) are None, so the JSON written from them stays strict.
Every metric is defined once, as a weighted sum (`weighted`): `scores` evaluates it with unit weights,
and `mlops.paired_bootstrap` with resample counts for whole blocks of resamples at once. `roc_curve` and
`pr_curve` give the plot points. The tests check all of them against scikit-learn (a test dependency
only: importing sklearn costs a pipeline stage ~1 s).
"""

from __future__ import annotations

from typing import Any

import numpy as np

METRICS = ("roc_auc", "pr_auc", "f1", "precision", "recall", "accuracy", "log_loss", "ece")
"""The metrics `evaluate` computes (`scores`); the gate's and the champion comparison's rules name them."""


LOWER_IS_BETTER = frozenset({"log_loss", "ece"})


def _groups(p: np.ndarray, descending: bool) -> tuple[np.ndarray, np.ndarray]:
    """Row order by score and the start index of each run of tied scores in that order."""
    order = np.argsort(-p if descending else p, kind="mergesort")
    s = p[order]
    starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]])
    return order, starts


def _safe_div(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(b > 0, a / np.where(b > 0, b, 1), np.nan)


def weighted(
    name: str, y: np.ndarray, p: np.ndarray, w: np.ndarray, threshold: float, bins: int
) -> np.ndarray:
    """One metric for each row of `w` (e.g. resamples x rows of draw counts); NaN where undefined.

    Args:
        name: a metric of `scores`.
        y: 0/1 labels; p: positive-class probabilities; w: non-negative weights, shape (k, rows).
        threshold: decision threshold (f1, precision, recall, accuracy).
        bins: calibration bins (ece).

    Returns:
        k values; NaN where the metric is undefined (ROC/PR AUC on one class, no weight at all).
    """
    y = y.astype(np.float64)
    pos, neg = w @ y, w @ (1 - y)
    total = pos + neg
    if name == "roc_auc":  # P(score of a positive > score of a negative), ties count one half
        order, starts = _groups(p, descending=False)
        ws = w[:, order]
        pos_g = np.add.reduceat(ws * y[order], starts, axis=1)
        neg_g = np.add.reduceat(ws * (1 - y[order]), starts, axis=1)
        below = np.cumsum(neg_g, axis=1) - neg_g
        return _safe_div((pos_g * (below + 0.5 * neg_g)).sum(axis=1), pos * neg)
    if name == "pr_auc":  # average precision: precision at each distinct threshold x recall step
        order, starts = _groups(p, descending=True)
        ws = w[:, order]
        tp = np.cumsum(np.add.reduceat(ws * y[order], starts, axis=1), axis=1)
        fp = np.cumsum(np.add.reduceat(ws * (1 - y[order]), starts, axis=1), axis=1)
        precision = np.nan_to_num(_safe_div(tp, tp + fp))
        recall_step = np.diff(np.c_[np.zeros(len(w)), tp], axis=1)
        return np.where((pos > 0) & (neg > 0), _safe_div((recall_step * precision).sum(axis=1), pos), np.nan)
    if name == "log_loss":
        q = np.clip(p, 1e-7, 1 - 1e-7)
        loss = -(y * np.log(q) + (1 - y) * np.log(1 - q))
        return _safe_div(w @ loss, total)
    if name == "ece":
        which = np.minimum((p * bins).astype(int), bins - 1)
        onehot = np.eye(bins)[which]  # rows x bins
        gap = np.abs((w * y) @ onehot - (w * p) @ onehot)
        return _safe_div(gap.sum(axis=1), total)
    pred = (p >= threshold).astype(np.float64)
    tp, fp, fn = w @ (y * pred), w @ ((1 - y) * pred), w @ (y * (1 - pred))
    if name == "accuracy":
        return _safe_div(w @ (y == pred).astype(np.float64), total)
    precision = np.nan_to_num(_safe_div(tp, tp + fp))  # zero_division=0
    recall = np.nan_to_num(_safe_div(tp, tp + fn))
    if name == "precision":
        return precision
    if name == "recall":
        return recall
    if name == "f1":
        return np.nan_to_num(_safe_div(2 * tp, 2 * tp + fp + fn))
    raise ValueError(f"unknown metric {name!r} (expected one of {', '.join(METRICS)})")


def expected_calibration_error(y: np.ndarray, p: np.ndarray, bins: int) -> float:
    """ECE: row-weighted mean |observed positive rate - mean predicted probability| over equal-width bins."""
    return float(weighted("ece", y, p, np.ones((1, len(y))), 0.5, bins)[0])


def scores(y: np.ndarray, p: np.ndarray, threshold: float, bins: int) -> dict[str, Any]:
    """Classification metrics for labels `y` (0/1) and positive-class probabilities `p`."""
    y = np.asarray(y)
    p = np.asarray(p, dtype=np.float64)
    ones = np.ones((1, len(y)))
    out: dict[str, Any] = {"rows": int(len(y)), "positive_rate": float(y.mean()) if len(y) else None}
    for name in METRICS:
        value = float(weighted(name, y, p, ones, threshold, bins)[0])
        out[name] = None if np.isnan(value) else value
    return out


def _curve_counts(y: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """False and true positives at each distinct score, highest score first, and those scores."""
    order = np.argsort(p, kind="mergesort")[::-1]
    s, t = p[order], np.asarray(y, dtype=np.float64)[order]
    last = np.r_[np.flatnonzero(np.diff(s)), len(s) - 1]  # the last row of each run of tied scores
    tps = np.cumsum(t)[last]
    return 1 + last - tps, tps, s[last]


def roc_curve(y: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """ROC points (fpr, tpr, thresholds) as scikit-learn's `roc_curve` gives them: collinear points
    dropped, a first point (0, 0) at threshold +inf."""
    fps, tps, thr = _curve_counts(y, np.asarray(p, dtype=np.float64))
    if len(fps) > 2:
        keep = np.flatnonzero(np.r_[True, np.logical_or(np.diff(fps, 2), np.diff(tps, 2)), True])
        fps, tps, thr = fps[keep], tps[keep], thr[keep]
    fps, tps, thr = np.r_[0.0, fps], np.r_[0.0, tps], np.r_[np.inf, thr]
    with np.errstate(divide="ignore", invalid="ignore"):
        return fps / fps[-1], tps / tps[-1], thr


def pr_curve(y: np.ndarray, p: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Precision-recall points (precision, recall, thresholds) as scikit-learn's
    `precision_recall_curve` gives them: recall decreasing, a last point (precision 1, recall 0)."""
    fps, tps, thr = _curve_counts(y, np.asarray(p, dtype=np.float64))
    with np.errstate(divide="ignore", invalid="ignore"):
        precision = np.where(tps + fps != 0, tps / (tps + fps), 0.0)
        recall = np.ones_like(tps) if tps[-1] == 0 else tps / tps[-1]
    return np.r_[precision[::-1], 1.0], np.r_[recall[::-1], 0.0], thr[::-1]
