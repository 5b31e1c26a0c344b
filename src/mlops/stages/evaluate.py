"""evaluate: model + test split -> reports/metrics.json and reports/plots/*.json.

Scores the held-out test rows through the full model artifact (raw features in, as in serving), then
writes the task's metrics (mlops.metrics, by model.json `task`; `DIGITS` significant digits), the same
metrics per business slice, and plot data for `dvc plots show|diff`:

- binary: ROC AUC, PR AUC, F1, precision, recall, accuracy, log loss, ECE; plots roc, pr, confusion,
  calibration;
- multiclass: accuracy, macro and weighted F1, log loss, top-k accuracy (`evaluate.top_k`), top-label
  ECE, and precision, recall and F1 of every class (`per_class`); plots confusion (N x N), calibration
  (top-label confidence against observed accuracy) and roc (one-vs-rest, one curve per class);
- regression: RMSE, MAE, R², MAPE (null when a target is 0), in the target's units; plots predicted
  (predicted against actual) and residuals (residual against predicted).

All JSON is strict: no NaN or Infinity (undefined values are null).
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mlops import files, labels, scorer
from mlops.labels import LABEL
from mlops.metrics import expected_calibration_error as expected_calibration_error
from mlops.metrics import pr_curve, roc_curve, scores, task_scores
from mlops.params.base import Section, Sections
from mlops.params.evaluate import EvaluateParams
from mlops.params.served import ServedBackend
from mlops.paths import add_paths
from mlops.tables import split_rows
from mlops.task import Task

log = logging.getLogger(__name__)

PLOTS = ("roc", "pr", "confusion", "calibration")
"""The binary task's plot files (multiclass: confusion, calibration, roc; regression: predicted, residuals)."""
DIGITS = 9
"""Significant digits of every metric in metrics.json. A metric is a sum over rows, and the order BLAS
adds them in can follow the memory alignment of the arrays, which differs between processes and
environments (the same numpy in the CI image and on a host gave slice log losses one last bit apart):
9 digits keep every figure a report or a bound needs and make the file's bytes, and so dvc.lock, the
same everywhere."""

MISSING = "(missing)"
"""The slice key of null values in a categorical slice column."""


def rounded(value: Any, digits: int = DIGITS) -> Any:
    """`value` with every float rounded to `digits` significant digits (nested dicts and lists too)."""
    if isinstance(value, float):
        return float(f"{value:.{digits}g}")
    if isinstance(value, dict):
        return {k: rounded(v, digits) for k, v in value.items()}
    if isinstance(value, list):
        return [rounded(v, digits) for v in value]
    return value


def slice_keys(frame: pd.DataFrame, column: str, bins: list[float] | None) -> pd.Series:
    """The slice each row falls in: the category, or a band label such as `[12, 24)`."""
    if bins is None:  # nulls of a nullable categorical column form their own slice
        return frame[column].astype(object).where(frame[column].notna(), MISSING).astype(str)
    bands = pd.cut(frame[column], bins=bins, right=False)
    return bands.map(lambda b: f"[{b.left:g}, {b.right:g})" if isinstance(b, pd.Interval) else "out_of_bins")


def slice_scores(
    frame: pd.DataFrame,
    y: np.ndarray,
    p: np.ndarray,
    threshold: float,
    params: EvaluateParams,
    task: Task | None = None,
) -> dict[str, dict[str, Any]]:
    """Per-slice metrics of the task; slices under `min_slice_rows` report only their size and target
    summary (positive rate, class shares or mean)."""
    bins = params.calibration_bins
    if task is None or task.kind == "binary":

        def score(ys: np.ndarray, ps: np.ndarray) -> dict[str, Any]:
            return scores(ys, ps, threshold, bins)

        def summary(ys: np.ndarray) -> dict[str, Any]:
            return {"rows": int(len(ys)), "positive_rate": float(ys.mean())}
    else:

        def score(ys: np.ndarray, ps: np.ndarray) -> dict[str, Any]:
            return task_scores(task, ys, ps, bins, params.top_k)

        summary = task.target_summary
    out: dict[str, dict[str, Any]] = {}
    for spec in params.slices:
        name = spec.column if spec.bins is None else f"{spec.column}_band"
        keys = slice_keys(frame, spec.column, spec.bins).to_numpy()
        out[name] = {}
        for key in sorted(set(keys)):
            mask = keys == key
            big = mask.sum() >= params.min_slice_rows
            out[name][key] = score(y[mask], p[mask]) if big else summary(y[mask])
    return out


def task_plot_data(task: Task, y: np.ndarray, p: np.ndarray, bins: int) -> dict[str, list[dict[str, Any]]]:
    """The plot files of a multiclass or regression model (binary: `plot_data`)."""
    if task.kind == "regression":
        return {
            "predicted": [{"actual": float(a), "predicted": float(b)} for a, b in zip(y, p, strict=True)],
            "residuals": [
                {"predicted": float(b), "residual": float(b - a)} for a, b in zip(y, p, strict=True)
            ],
        }
    pred = np.argmax(p, axis=1)
    conf = p.max(axis=1)
    which = np.minimum((conf * bins).astype(int), bins - 1)
    calibration = [
        {
            "bin": b,
            "mean_predicted": float(conf[which == b].mean()),
            "fraction_positive": float((pred == y)[which == b].mean()),  # observed accuracy
            "rows": int((which == b).sum()),
        }
        for b in range(bins)
        if (which == b).any()
    ]
    roc = []
    for i, name in enumerate(task.classes):  # one-vs-rest
        fpr, tpr, thr = roc_curve((y == i).astype(int), p[:, i])
        roc += [
            {
                "class": name,
                "fpr": float(a),
                "tpr": float(b),
                "threshold": float(t) if np.isfinite(t) else None,
            }
            for a, b, t in zip(fpr, tpr, thr, strict=True)
            if np.isfinite(a) and np.isfinite(b)
        ]
    return {
        "confusion": [
            {"actual": a, "predicted": b} for a, b in zip(task.decode(y), task.decode(pred), strict=True)
        ],
        "calibration": calibration,
        "roc": roc,
    }


def plot_data(
    y: np.ndarray, p: np.ndarray, threshold: float, classes: list[str], positive: str, bins: int
) -> dict[str, list[dict[str, Any]]]:
    """Rows for the DVC plots: ROC, precision-recall, confusion matrix, calibration.

    `y` is 0/1 with 1 = `positive` (`mlops.labels`); the confusion matrix names both classes."""
    fpr, tpr, roc_thr = roc_curve(y, p)
    precision, recall, _ = pr_curve(y, p)
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
            {"actual": a, "predicted": b}
            for a, b in zip(
                labels.to_classes(y, classes, positive),
                labels.to_classes(pred, classes, positive),
                strict=True,
            )
        ],
        "calibration": calibration,
    }


def served_scorer(model_dir: Path, backend: str) -> scorer.Scorer:
    """The model as it is served: the ONNX export on ONNX Runtime with `serve.backend: onnx` (no torch
    import; the safetensors' sha256 is still verified), else the torch network. Without an export
    (`train.onnx.exporter: none`) torch scores and the gate's parity rule fails the candidate."""
    if backend == "onnx":
        from mlops import artifact

        meta, _ = artifact.verify(model_dir, "weights")  # the record of truth is checked either way
        if meta.get("onnx"):
            return scorer.load_onnx(model_dir)
    from mlops import model as model_lib

    return model_lib.load(model_dir)


def run(
    params: EvaluateParams,
    model_dir: Path,
    data: Path,
    test: Path,
    metrics_path: Path,
    plots_dir: Path,
    backend: str = "onnx",
) -> dict[str, Any]:
    """Score the test split on the served model and write metrics and plot data.

    Args:
        params: the `evaluate` section.
        model_dir: models/ (verified on load).
        data: the raw table (test rows are taken from it by id).
        test: data/processed/test.parquet (ids and labels of the test split).
        metrics_path: reports/metrics.json.
        plots_dir: reports/plots/.
        backend: `serve.backend`: what scores the rows (see `scorer`).

    Returns:
        The metrics written.
    """
    log.info("evaluate: %s on %s", model_dir, test)
    model = served_scorer(model_dir, backend)
    meta = model.metadata
    task = model.task
    rows = split_rows(data, test, meta["id"])
    p = model.predict_proba(rows)
    if task.kind != "binary":
        y = rows[LABEL].to_numpy(dtype=np.float64 if task.kind == "regression" else np.int64)
        result = {
            "task": task.kind,
            "test": task_scores(task, y, p, params.calibration_bins, params.top_k),
            "slices": slice_scores(rows, y, p, model.threshold, params, task),
        }
        plots = task_plot_data(task, y, p, params.calibration_bins)
    else:
        y = rows[LABEL].to_numpy(dtype=int)
        result = {
            "test": scores(y, p, model.threshold, params.calibration_bins),
            "slices": slice_scores(rows, y, p, model.threshold, params),
            "threshold": model.threshold,
        }
        classes, positive = labels.from_metadata(meta)
        plots = plot_data(y, p, model.threshold, classes, positive, params.calibration_bins)
    result = rounded(result)
    files.write_json(metrics_path, result)
    for stale in plots_dir.glob("*.json") if plots_dir.is_dir() else ():
        if stale.stem not in plots:  # another task's plot files
            stale.unlink()
    for name, points in plots.items():
        files.write_json(plots_dir / f"{name}.json", points)
    t = result["test"]
    headline = {"binary": "roc_auc", "multiclass": "macro_f1", "regression": "rmse"}[task.kind]
    log.info(
        "evaluate (%s): %d test rows, %s %s -> %s",
        model.backend,
        t["rows"],
        headline,
        f"{t[headline]:.4f}" if t[headline] is not None else "undefined",
        metrics_path,
    )
    return result


# ---------------------------------------------------------------- the command: `mlops evaluate`
HELP = "score the test split: metrics, slices, plots"
"""One line for `mlops --help` (read without importing this module)."""

SECTIONS: dict[str, type[Section]] = {
    "evaluate": EvaluateParams,
    "serve": ServedBackend,
}
"""The params.yaml sections this stage reads (dvc.yaml declares the same), validated alone."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Options of `mlops evaluate`; path defaults are the paths dvc.yaml declares."""
    add_paths(p, "--model-dir", "--data", "--test", "--metrics", "--plots-dir")
    p.add_argument("--json", action="store_true", help="print the test metrics as JSON on stdout")


def main(args: argparse.Namespace, params: Sections) -> None:
    """Run `mlops evaluate` with its validated sections."""
    result = run(
        params.evaluate,
        args.model_dir,
        args.data,
        args.test,
        args.metrics,
        args.plots_dir,
        backend=params.serve.backend,
    )
    if args.json:
        print(json.dumps(result["test"], sort_keys=True))
