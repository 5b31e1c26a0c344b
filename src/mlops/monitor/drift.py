"""drift: a window of logged predictions vs the training reference -> Evidently report, summary, metrics.

`mlops drift` reads the server's prediction log (mlops.monitor.window) and the reference (the training
split's raw feature values + label, and the model's outputs on them as the task's prediction columns:
`reference.parquet` of the registered model, which `mlops fetch-model` puts next to model.json), then
tests each schema feature with the test params.yaml `drift` sets for its dtype (numeric / categorical;
the method Evidently used is recorded). The task (params.yaml `schema.task`, mlops.task) says what the
model's outputs are; prediction drift tests each of its prediction columns with `drift.prediction`:
binary `probability` (the positive class's), multiclass `probability[<class>]` for every class,
regression `prediction` (the predicted value). It also reports each feature's missing rate and
unknown-category rate (values outside the schema's categories).

Target drift: the server never sees true labels, so nothing joins them to the log in the template; a
record that carries one (`actual`, mlops.monitor.window) counts as labelled. With at least
`drift.min_rows` labelled rows in the window, the reference's label column is tested against them:
class shares with `drift.categorical` (classification), the target's distribution with `drift.numeric`
(regression). Target and prediction drift are reported (summary, metrics); neither sets the verdict.

Outputs, written atomically: `<out-dir>/report.html` (Evidently), `<out-dir>/summary.json` (strict
JSON), Prometheus metrics (mlops.monitor.export: pushed to a Pushgateway and/or written to a file).
Verdict: drift when the share of drifted features >= `drift.share_threshold` (exit 7, DriftDetected);
fewer than `drift.min_rows` logged rows is "insufficient data" (exit 0: no verdict either way).
"""

from __future__ import annotations

import datetime as dt
import html
import logging
from collections import Counter
from pathlib import Path
from typing import Any

import pandas as pd

from mlops import files
from mlops.config import Params
from mlops.errors import ConfigError, DataError, DriftDetected, MlopsError
from mlops.labels import LABEL
from mlops.monitor import export
from mlops.monitor.compare import CATEGORICAL, NUMERIC, check_methods, compare, prepare, rates
from mlops.monitor.window import ACTUAL, Window, read_window
from mlops.params.drift import DriftParams
from mlops.params.schema import SchemaParams
from mlops.task import Task

log = logging.getLogger(__name__)


# ---------------------------------------------------------------- inputs
def load_reference(location: str, schema: SchemaParams, data: Path | None = None) -> pd.DataFrame:
    """The reference rows: raw schema features (+ the label column and the task's prediction columns
    when present).

    `location` is a reference.parquet (raw features) or an encoded split of `mlops featurize`
    (data/processed/train.parquet: ids + label), whose raw rows are then joined from `data`.
    """
    from mlops import tables

    try:
        frame = pd.read_parquet(location)
    except Exception as e:  # noqa: BLE001 - pyarrow/fsspec raise many types
        raise DataError(f"{location}: reference not readable as Parquet ({type(e).__name__}: {e})") from e
    missing = [f for f in schema.features if f not in frame.columns]
    if missing and schema.id in frame.columns and LABEL in frame.columns and data is not None:
        frame = tables.split_rows(data, Path(location), schema.id)  # an encoded split: join the raw rows
        missing = [f for f in schema.features if f not in frame.columns]
    if missing:
        raise DataError(
            f"{location}: reference lacks feature column(s) {missing[:5]} (expected raw features)"
        )
    return frame


# ---------------------------------------------------------------- the command
def run(
    params: Params,
    log_dir: str,
    reference: str,
    out_dir: Path,
    window_hours: float | None = None,
    push_url: str | None = None,
    metrics_file: Path | None = None,
    trigger: bool = False,
    data: Path | None = None,
    now: dt.datetime | None = None,
) -> dict[str, Any]:
    """Compare the log window with the reference; write the report, summary and metrics.

    Args:
        params: the whole params (`drift`, `schema`, `train.model_name`, `retrain`).
        log_dir: the prediction log (local directory or fsspec URL).
        reference: reference.parquet (or an encoded training split, joined with `data`).
        out_dir: where report.html and summary.json go (reports/drift).
        window_hours: overrides `drift.window_hours`.
        push_url: overrides `drift.push_url`.
        metrics_file: also write the metrics in Prometheus text format here.
        trigger: call the retrain trigger on drift (as `drift.trigger_retrain: true` does).
        data: the raw table, for a reference that is an encoded split.
        now: the window's end (default: now).

    Returns:
        The summary.

    Raises:
        DriftDetected: the share of drifted features reached `drift.share_threshold` (exit 7).
    """
    p, schema = params.drift, params.schema_
    check_methods(p)  # a typo in params fails every run, not only those with enough rows
    hours = window_hours if window_hours is not None else p.window_hours
    if hours is not None and hours <= 0:
        raise ConfigError(f"--window-hours: expected a positive number of hours, got {hours}")
    task = Task.from_schema(schema)
    outputs = task.prediction_column_names()
    target = (schema.label.column, CATEGORICAL if task.is_classification else NUMERIC)
    window = read_window(log_dir, hours, now, schema.features, task)
    models = Counter(m for m in window.frame.get("model", []) if m)
    model = models.most_common(1)[0][0] if models else params.train.model_name
    ref = prepare(load_reference(reference, schema, data), schema, outputs, target)
    logged = window.frame.rename(columns={ACTUAL: target[0]}) if len(window.frame) else window.frame
    current = prepare(logged, schema, outputs, target) if len(logged) else pd.DataFrame(columns=ref.columns)
    summary = _summary_head(model, window, ref, p, hours, log_dir, reference)
    summary["task"] = task.kind
    summary["rates"] = {"current": rates(current, schema), "reference": rates(ref, schema)}
    labelled = int(current[target[0]].notna().sum()) if target[0] in current else 0
    test_target = target if labelled >= p.min_rows and target[0] in ref else None
    out_dir.mkdir(parents=True, exist_ok=True)
    if len(current) < p.min_rows:
        summary["status"] = "insufficient_data"
        summary["message"] = (
            f"{len(current)} logged rows in the window, fewer than drift.min_rows={p.min_rows}"
        )
        log.warning("drift: insufficient data: %s", summary["message"])
        page = f"<html><body><h1>Drift: insufficient data</h1><p>{html.escape(summary['message'])}</p>"
        files.write_bytes(out_dir / "report.html", (page + "</body></html>\n").encode())
        summary["target"] = _target(task, target[0], None, ref, current, labelled, p)
    else:
        results, snapshot = compare(current, ref, schema, p, outputs, test_target)
        features = {n: results[n] for n in schema.features}
        drifted = sorted(n for n, r in features.items() if r["drifted"])
        share = len(drifted) / len(features)
        predictions = {n: results[n] for n in outputs if n in results}
        summary |= {
            "status": "drift" if share >= p.share_threshold else "no_drift",
            "features": features,
            "drifted_features": drifted,
            "share_drifted_features": share,
            "prediction": _prediction(predictions),
            "predictions": predictions,
            "target": _target(
                task, target[0], results.get(target[0]) if test_target else None, ref, current, labelled, p
            ),
        }
        summary["message"] = (
            f"{len(drifted)} of {len(features)} features drifted ({share:.0%}, threshold "
            f"{p.share_threshold:.0%}): {', '.join(drifted) or 'none'}"
        )
        with files.atomic_path(out_dir / "report.html") as tmp:
            snapshot.save_html(str(tmp))
    summary["drift_detected"] = summary["status"] == "drift"
    summary["insufficient_data"] = summary["status"] == "insufficient_data"
    if summary["drift_detected"] and (trigger or p.trigger_retrain):
        summary["trigger"] = _trigger(params, summary["message"])
    files.write_json(out_dir / "summary.json", summary)
    pushed = _export(summary, push_url or p.push_url, metrics_file)
    log.info("drift: %s; %s -> %s", summary["status"], summary["message"], out_dir)
    if summary["drift_detected"]:  # the verdict wins over a failed push (which it names)
        failed = f"; {pushed}" if isinstance(pushed, MlopsError) else ""
        error = DriftDetected(f"{out_dir / 'summary.json'}: {summary['message']}{failed}")
        error.summary = summary  # type: ignore[attr-defined]  # for `--json` output on exit 7
        raise error
    if isinstance(pushed, MlopsError):
        raise pushed
    return summary


def _prediction(results: dict[str, dict[str, Any]]) -> dict[str, Any] | None:
    """The prediction drift verdict: the one output's result (binary, regression), or for several
    outputs (multiclass) whether any drifted and which, with their common method and threshold (each
    output's score is in `predictions`)."""
    if len(results) <= 1:
        return next(iter(results.values()), None)
    methods = {r["method"] for r in results.values()}
    thresholds = {r["threshold"] for r in results.values()}
    drifted = [n for n, r in results.items() if r["drifted"]]
    return {
        "kind": NUMERIC,
        "method": methods.pop() if len(methods) == 1 else None,
        "score": None,
        "threshold": thresholds.pop() if len(thresholds) == 1 else None,
        "drifted": bool(drifted),
        "drifted_outputs": drifted,
    }


def _target(
    task: Task,
    column: str,
    result: dict[str, Any] | None,
    ref: pd.DataFrame,
    current: pd.DataFrame,
    labelled: int,
    p: DriftParams,
) -> dict[str, Any]:
    """Target drift: the test's result (None: not tested, and why), the labelled rows, and what the
    label looks like on each side (class shares, or mean and std)."""
    out: dict[str, Any] = {"column": column, "labelled_rows": labelled}
    if result is None:
        why = (
            f"the reference has no label column '{column}'"
            if column not in ref
            else f"{labelled} logged rows carry their true label (`{ACTUAL}`), fewer than "
            f"drift.min_rows={p.min_rows}"
        )
        out |= {"kind": None, "method": None, "score": None, "threshold": None, "drifted": False}
        out["note"] = why
    else:
        out |= result
    out["reference"] = _label_summary(task, ref[column] if column in ref else None)
    out["current"] = _label_summary(task, current[column] if column in current else None)
    return out


def _label_summary(task: Task, values: pd.Series | None) -> dict[str, Any]:
    """Rows with a label; class shares (classification, values outside the classes as `other`) or the
    mean and std (regression)."""
    values = values.dropna() if values is not None else pd.Series([], dtype=object)
    n = len(values)
    out: dict[str, Any] = {"rows": n}
    if task.is_classification:
        counts = values.value_counts()
        shares = {c: float(counts.get(c, 0) / n) if n else None for c in task.classes}
        other = n - int(sum(counts.get(c, 0) for c in task.classes))
        out["class_shares"] = shares | ({"other": other / n} if other else {})
    else:
        out["mean"] = float(values.mean()) if n else None
        out["std"] = float(values.std(ddof=0)) if n else None
    return out


def _summary_head(
    model: str, window: Window, ref: pd.DataFrame, p: DriftParams, hours: float | None, logs: str, ref_at: str
) -> dict[str, Any]:
    return {
        "model": model,
        "generated_at": dt.datetime.now(dt.UTC).isoformat(),
        "log_dir": logs,
        "reference": ref_at,
        "window": {
            "hours": hours,
            "start": window.start.isoformat() if window.start else None,
            "end": window.end.isoformat() if window.end else None,
        },
        "rows": {"current": int(len(window.frame)), "reference": int(len(ref))},
        "files": {
            "read": window.files_read,
            "skipped": window.skipped_count,
            "skipped_files": window.skipped,
        },
        "min_rows": p.min_rows,
        "threshold_share": p.share_threshold,
        "tests": {
            "numeric": p.numeric.model_dump(),
            "categorical": p.categorical.model_dump(),
            "prediction": p.prediction.model_dump() if p.prediction else None,
        },
        "features": {},
        "drifted_features": [],
        "share_drifted_features": 0.0,
        "prediction": None,
        "predictions": {},
    }


def _trigger(params: Params, reason: str) -> dict[str, Any]:
    """Call the retrain trigger; its failure is recorded, not raised (the drift verdict stands)."""
    from mlops.monitor import trigger

    try:
        result = trigger.trigger_retrain(params.retrain, f"mlops drift: {reason}")
    except MlopsError as e:
        log.error("drift: retrain trigger failed: %s", e)
        return {"triggered": False, "error": str(e)}
    log.info("drift: retrain trigger: %s", result.message)
    return {"triggered": result.triggered, "provider": result.provider, "message": result.message}


def _export(summary: dict[str, Any], push_url: str | None, metrics_file: Path | None) -> MlopsError | None:
    """Write and push the metrics; a failed push is returned (logged), not raised."""
    registry = export.build_registry(summary)
    if metrics_file is not None:
        export.write_textfile(metrics_file, registry)
    if push_url:
        try:
            export.push(push_url, registry, summary["model"])
        except export.MetricsPushFailed as e:
            log.error("drift: %s", e)
            return e
    return None
