"""evaluate: model + test split -> reports/metrics.json and reports/plots/*.json.

Scores the held-out test rows through the full model artifact (raw features in, as in serving), then
writes ROC AUC, PR AUC, F1, precision, recall, accuracy, log loss and expected calibration error,
the same metrics per business slice, and plot data for `dvc plots show|diff` (ROC, PR, confusion
matrix, calibration). All JSON is strict: no NaN or Infinity (undefined values are null).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn import metrics as skm

from mlops import files
from mlops import model as model_lib
from mlops.config import EvaluateParams
from mlops.errors import DataError
from mlops.featurize import LABEL
from mlops.validate import read_table

log = logging.getLogger(__name__)

PLOTS = ("roc", "pr", "confusion", "calibration")


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


def slice_keys(frame: pd.DataFrame, column: str, bins: list[float] | None) -> pd.Series:
    """The slice each row falls in: the category, or a band label such as `[12, 24)`."""
    if bins is None:
        return frame[column].astype(str)
    bands = pd.cut(frame[column], bins=bins, right=False)
    return bands.map(lambda b: f"[{b.left:g}, {b.right:g})" if isinstance(b, pd.Interval) else "out_of_bins")


def slice_scores(
    frame: pd.DataFrame, y: np.ndarray, p: np.ndarray, threshold: float, params: EvaluateParams
) -> dict[str, dict[str, Any]]:
    """Per-slice metrics; slices under `min_slice_rows` report only their size and positive rate."""
    out: dict[str, dict[str, Any]] = {}
    for spec in params.slices:
        name = spec.column if spec.bins is None else f"{spec.column}_band"
        keys = slice_keys(frame, spec.column, spec.bins).to_numpy()
        out[name] = {}
        for key in sorted(set(keys)):
            mask = keys == key
            if mask.sum() >= params.min_slice_rows:
                out[name][key] = scores(y[mask], p[mask], threshold, params.calibration_bins)
            else:
                out[name][key] = {"rows": int(mask.sum()), "positive_rate": float(y[mask].mean())}
    return out


def plot_data(
    y: np.ndarray, p: np.ndarray, threshold: float, classes: list[str], bins: int
) -> dict[str, list[dict[str, Any]]]:
    """Rows for the DVC plots: ROC, precision-recall, confusion matrix, calibration."""
    fpr, tpr, roc_thr = skm.roc_curve(y, p)
    precision, recall, _ = skm.precision_recall_curve(y, p)
    neg, pos = classes
    pred = p >= threshold
    which = np.minimum((p * bins).astype(int), bins - 1)
    calibration = [
        {
            "bin": b,
            "mean_predicted": float(p[which == b].mean()),
            "fraction_positive": float(y[which == b].mean()),
            "rows": int((which == b).sum()),
        }
        for b in range(bins)
        if (which == b).any()
    ]
    return {
        # roc_curve's first threshold is +inf; strict JSON has no Infinity, so it is written as null
        "roc": [
            {"fpr": float(a), "tpr": float(b), "threshold": float(t) if np.isfinite(t) else None}
            for a, b, t in zip(fpr, tpr, roc_thr, strict=True)
        ],
        "pr": [{"recall": float(r), "precision": float(q)} for r, q in zip(recall, precision, strict=True)],
        "confusion": [
            {"actual": pos if a else neg, "predicted": pos if b else neg}
            for a, b in zip(y.astype(bool), pred, strict=True)
        ],
        "calibration": calibration,
    }


def test_rows(data: Path, test: Path, id_column: str) -> pd.DataFrame:
    """Raw feature rows of the test split (joined on the id), with the 0/1 label."""
    ids = pd.read_parquet(test, columns=[id_column, LABEL])
    raw = read_table(data)
    rows = ids.merge(raw, on=id_column, how="left", validate="one_to_one")
    if rows.drop(columns=[LABEL]).isna().all(axis=1).any():
        raise DataError(f"{data}: some test ids of {test} are missing; rerun featurize")
    return rows


def run(
    params: EvaluateParams, model_dir: Path, data: Path, test: Path, metrics_path: Path, plots_dir: Path
) -> dict[str, Any]:
    """Score the test split and write metrics and plot data.

    Args:
        params: the `evaluate` section.
        model_dir: models/ (verified on load).
        data: the raw table (test rows are taken from it by id).
        test: data/processed/test.parquet (ids and labels of the test split).
        metrics_path: reports/metrics.json.
        plots_dir: reports/plots/.

    Returns:
        The metrics written.
    """
    log.info("evaluate: %s on %s", model_dir, test)
    model = model_lib.load(model_dir)
    meta = model.metadata
    rows = test_rows(data, test, meta["id"])
    y = rows[LABEL].to_numpy(dtype=int)
    p = model.predict_proba(rows)
    result = {
        "test": scores(y, p, model.threshold, params.calibration_bins),
        "slices": slice_scores(rows, y, p, model.threshold, params),
        "threshold": model.threshold,
    }
    files.write_json(metrics_path, result)
    for name, points in plot_data(
        y, p, model.threshold, meta["label"]["classes"], params.calibration_bins
    ).items():
        files.write_json(plots_dir / f"{name}.json", points)
    t = result["test"]
    log.info(
        "evaluate: %d test rows, ROC AUC %.4f, F1 %.4f -> %s", t["rows"], t["roc_auc"], t["f1"], metrics_path
    )
    return result
