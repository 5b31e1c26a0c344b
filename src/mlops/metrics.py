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
"""The binary metrics `evaluate` computes (`scores`); the gate's and the champion comparison's rules name them."""

MULTICLASS_METRICS = ("accuracy", "macro_f1", "weighted_f1", "log_loss", "top_k_accuracy", "ece")
"""Multiclass: `top_k_accuracy` counts a row right when its class is among the `evaluate.top_k` most
probable; `ece` is the top-label calibration error (confidence = the highest probability)."""

REGRESSION_METRICS = ("rmse", "mae", "r2", "mape")
"""Regression, in the target's units (`mape`: a fraction, undefined when a target is 0)."""

PER_CLASS = ("precision", "recall", "f1")
"""Multiclass metrics reported for every class (`per_class` in metrics.json; `gate.classes.min` floors)."""

TASK_METRICS = {"binary": METRICS, "multiclass": MULTICLASS_METRICS, "regression": REGRESSION_METRICS}
ALL_METRICS = tuple(dict.fromkeys(m for names in TASK_METRICS.values() for m in names))

LOWER_IS_BETTER = frozenset({"log_loss", "ece", "rmse", "mae", "mape"})


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
    name: str, y: np.ndarray, p: np.ndarray, w: np.ndarray, threshold: float, bins: int, top_k: int = 2
) -> np.ndarray:
    """One metric for each row of `w` (e.g. resamples x rows of draw counts); NaN where undefined.

    Args:
        name: a metric of `scores` (binary), of MULTICLASS_METRICS or `<precision|recall|f1>.<class
            index>` (multiclass: `p` is [rows, N]), or of REGRESSION_METRICS.
        y: 0/1 labels (binary), class indices (multiclass) or targets (regression); p: positive-class
            probabilities, class probabilities or predictions; w: non-negative weights, shape (k, rows).
        threshold: decision threshold (binary f1, precision, recall, accuracy).
        bins: calibration bins (ece).
        top_k: multiclass `top_k_accuracy`'s k.

    Returns:
        k values; NaN where the metric is undefined (ROC/PR AUC on one class, no weight at all).
    """
    if p.ndim == 2:
        return _multiclass(name, y, p, w, bins, top_k)
    if name in REGRESSION_METRICS:
        return _regression(name, y, p, w)
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


def _multiclass(name: str, y: np.ndarray, p: np.ndarray, w: np.ndarray, bins: int, k: int) -> np.ndarray:
    """One multiclass metric per row of `w`: y holds class indices, p [rows, N] probabilities."""
    y = y.astype(np.int64)
    n_classes = p.shape[1]
    total = w.sum(axis=1)
    pred = np.argmax(p, axis=1)
    if name == "accuracy":
        return _safe_div(w @ (pred == y).astype(np.float64), total)
    if name == "log_loss":
        q = np.clip(p[np.arange(len(y)), y], 1e-7, 1.0)
        return _safe_div(w @ -np.log(q), total)
    if name == "top_k_accuracy":
        k = min(k, n_classes)
        top = np.argsort(-p, axis=1, kind="stable")[:, :k]
        return _safe_div(w @ (top == y[:, None]).any(axis=1).astype(np.float64), total)
    if name == "ece":
        conf = p.max(axis=1)
        which = np.minimum((conf * bins).astype(int), bins - 1)
        onehot = np.eye(bins)[which]
        gap = np.abs((w * (pred == y)) @ onehot - (w * conf) @ onehot)
        return _safe_div(gap.sum(axis=1), total)
    if name in ("macro_f1", "weighted_f1") or name.split(".")[0] in PER_CLASS:
        truth = np.eye(n_classes)[y]  # rows x N
        guess = np.eye(n_classes)[pred]
        tp = w @ (truth * guess)  # k x N
        fp = w @ ((1 - truth) * guess)
        fn = w @ (truth * (1 - guess))
        f1 = np.nan_to_num(_safe_div(2 * tp, 2 * tp + fp + fn))
        if name == "macro_f1":
            return f1.mean(axis=1)
        if name == "weighted_f1":
            support = w @ truth
            return _safe_div((f1 * support).sum(axis=1), support.sum(axis=1))
        metric, _, which_class = name.partition(".")
        c = int(which_class)
        if metric == "precision":
            return np.nan_to_num(_safe_div(tp[:, c], tp[:, c] + fp[:, c]))
        if metric == "recall":
            return _safe_div(tp[:, c], tp[:, c] + fn[:, c])
        return f1[:, c]
    raise ValueError(f"unknown multiclass metric {name!r} (expected one of {', '.join(MULTICLASS_METRICS)})")


def _regression(name: str, y: np.ndarray, p: np.ndarray, w: np.ndarray) -> np.ndarray:
    """One regression metric per row of `w`: y targets, p predictions (same units)."""
    y = y.astype(np.float64)
    err = p - y
    total = w.sum(axis=1)
    if name == "rmse":
        return np.sqrt(_safe_div(w @ err**2, total))
    if name == "mae":
        return _safe_div(w @ np.abs(err), total)
    if name == "mape":
        if (y == 0).any():
            return np.full(len(w), np.nan)
        return _safe_div(w @ np.abs(err / y), total)
    if name == "r2":
        mean = _safe_div(w @ y, total)
        ss_tot = (w * (y[None, :] - mean[:, None]) ** 2).sum(axis=1)
        ss_res = w @ err**2
        return np.where(ss_tot > 0, 1 - ss_res / np.where(ss_tot > 0, ss_tot, 1), np.nan)
    raise ValueError(f"unknown regression metric {name!r} (expected one of {', '.join(REGRESSION_METRICS)})")


def multiclass_scores(
    y: np.ndarray, p: np.ndarray, classes: list[str], bins: int, top_k: int
) -> dict[str, Any]:
    """Multiclass metrics for class indices `y` and probabilities `p` [rows, N]; `per_class` holds
    precision, recall, F1 and rows of every class."""
    y = np.asarray(y).astype(np.int64)
    p = np.asarray(p, dtype=np.float64)
    ones = np.ones((1, len(y)))
    out: dict[str, Any] = {"rows": int(len(y))}
    out["class_rates"] = {c: float((y == i).mean()) if len(y) else None for i, c in enumerate(classes)}
    for name in MULTICLASS_METRICS:
        value = float(_multiclass(name, y, p, ones, bins, top_k)[0]) if len(y) else float("nan")
        out[name] = None if np.isnan(value) else value
    out["top_k"] = top_k
    per_class: dict[str, dict[str, Any]] = {}
    for i, c in enumerate(classes):
        row: dict[str, Any] = {"rows": int((y == i).sum())}
        for metric in PER_CLASS:
            value = (
                float(_multiclass(f"{metric}.{i}", y, p, ones, bins, top_k)[0]) if len(y) else float("nan")
            )
            row[metric] = None if np.isnan(value) else value
        per_class[c] = row
    out["per_class"] = per_class
    return out


def regression_scores(y: np.ndarray, p: np.ndarray) -> dict[str, Any]:
    """Regression metrics for targets `y` and predictions `p` (both in the target's units)."""
    y = np.asarray(y, dtype=np.float64)
    p = np.asarray(p, dtype=np.float64)
    ones = np.ones((1, len(y)))
    out: dict[str, Any] = {"rows": int(len(y)), "mean_target": float(y.mean()) if len(y) else None}
    for name in REGRESSION_METRICS:
        value = float(_regression(name, y, p, ones)[0]) if len(y) else float("nan")
        out[name] = None if np.isnan(value) else value
    return out


def task_scores(task: Any, y: np.ndarray, p: np.ndarray, bins: int, top_k: int = 2) -> dict[str, Any]:
    """The metrics of `task` (mlops.task.Task) for encoded targets `y` and model outputs `p`."""
    if task.kind == "multiclass":
        return multiclass_scores(y, p, list(task.classes), bins, top_k)
    if task.kind == "regression":
        return regression_scores(y, p)
    return scores(y, p, task.threshold, bins)


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
