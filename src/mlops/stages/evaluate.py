"""evaluate: model + test split -> reports/metrics.json and reports/plots/*.json.

Scores the held-out test rows through the full model artifact (raw features in, as in serving), then
writes ROC AUC, PR AUC, F1, precision, recall, accuracy, log loss and expected calibration error,
the same metrics per business slice, and plot data for `dvc plots show|diff` (ROC, PR, confusion
matrix, calibration). All JSON is strict: no NaN or Infinity (undefined values are null).
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
from mlops.metrics import pr_curve, roc_curve, scores
from mlops.params.base import Section, Sections
from mlops.params.evaluate import EvaluateParams
from mlops.params.served import ServedBackend
from mlops.paths import add_paths
from mlops.tables import split_rows

log = logging.getLogger(__name__)

PLOTS = ("roc", "pr", "confusion", "calibration")
MISSING = "(missing)"
"""The slice key of null values in a categorical slice column."""


def slice_keys(frame: pd.DataFrame, column: str, bins: list[float] | None) -> pd.Series:
    """The slice each row falls in: the category, or a band label such as `[12, 24)`."""
    if bins is None:  # nulls of a nullable categorical column form their own slice
        return frame[column].astype(object).where(frame[column].notna(), MISSING).astype(str)
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
    rows = split_rows(data, test, meta["id"])
    y = rows[LABEL].to_numpy(dtype=int)
    p = model.predict_proba(rows)
    result = {
        "test": scores(y, p, model.threshold, params.calibration_bins),
        "slices": slice_scores(rows, y, p, model.threshold, params),
        "threshold": model.threshold,
    }
    files.write_json(metrics_path, result)
    classes, positive = labels.from_metadata(meta)
    for name, points in plot_data(y, p, model.threshold, classes, positive, params.calibration_bins).items():
        files.write_json(plots_dir / f"{name}.json", points)
    t = result["test"]
    log.info(
        "evaluate (%s): %d test rows, ROC AUC %.4f, F1 %.4f -> %s",
        model.backend,
        t["rows"],
        t["roc_auc"],
        t["f1"],
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
