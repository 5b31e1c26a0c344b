"""export: a drift summary as Prometheus gauges, pushed to a Pushgateway or written in text format.

Prediction drift per task (mlops.task): `mlops_drift_prediction_output_*` has one series per prediction
column (`output`: binary `probability`, multiclass `probability[<class>]` per class, regression
`prediction`); `mlops_drift_prediction_drifted` is 1 when any output drifted, and
`mlops_drift_prediction_score` is the score of a task with one output (binary, regression: the same
value as its output series; multiclass sets none). Target drift (`mlops_drift_target_*`) is set only
when the window had enough labelled rows to test it; `mlops_drift_labelled_rows` always.

Every gauge carries the label `model`; a push uses job `mlops_drift` and the grouping key
model=<name>, so each model's last run replaces its previous one on the Pushgateway. The names
(monitoring/ rules and the dashboard use them):

    mlops_drift_last_run_timestamp_seconds{model}
    mlops_drift_detected{model}, mlops_drift_insufficient_data{model}              0/1
    mlops_drift_share_drifted_features{model}, mlops_drift_threshold_share{model}
    mlops_drift_feature_score{model,feature,method}, mlops_drift_feature_drifted{model,feature}
    mlops_drift_prediction_score{model,method}, mlops_drift_prediction_drifted{model}
    mlops_drift_prediction_output_score{model,output,method}, mlops_drift_prediction_output_drifted{model,output}
    mlops_drift_target_score{model,method}, mlops_drift_target_drifted{model}, mlops_drift_labelled_rows{model}
    mlops_drift_missing_rate{model,feature}, mlops_drift_unknown_category_rate{model,feature}
    mlops_drift_rows{model,dataset}  (dataset = current | reference)
    mlops_drift_skipped_files{model}
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path
from typing import Any

from mlops import files
from mlops.errors import MlopsError

log = logging.getLogger(__name__)

JOB = "mlops_drift"


class MetricsPushFailed(MlopsError):
    """The Pushgateway did not accept the drift metrics (exit 1: the run's outputs are still written)."""

    exit_code = 1


def _num(value: Any) -> float:
    """A gauge value: None and non-finite numbers become NaN (Prometheus' "no value")."""
    if value is None:
        return math.nan
    value = float(value)
    return value if math.isfinite(value) else math.nan


def build_registry(summary: dict[str, Any]) -> Any:
    """A CollectorRegistry holding the gauges of one drift summary."""
    from prometheus_client import CollectorRegistry, Gauge

    registry = CollectorRegistry()
    model = summary["model"]

    def gauge(name: str, doc: str, labels: tuple[str, ...] = ()) -> Gauge:
        return Gauge(name, doc, ("model", *labels), registry=registry)

    gauge("mlops_drift_last_run_timestamp_seconds", "End of the last drift run (Unix time)").labels(
        model
    ).set(time.time())
    gauge("mlops_drift_detected", "1 if the share of drifted features reached the threshold").labels(
        model
    ).set(int(summary["drift_detected"]))
    gauge("mlops_drift_insufficient_data", "1 if the window had fewer rows than drift.min_rows").labels(
        model
    ).set(int(summary["insufficient_data"]))
    gauge("mlops_drift_share_drifted_features", "Share of features whose drift test fired").labels(model).set(
        summary["share_drifted_features"]
    )
    gauge("mlops_drift_threshold_share", "Configured drift.share_threshold").labels(model).set(
        summary["threshold_share"]
    )
    score = gauge("mlops_drift_feature_score", "Drift test statistic per feature", ("feature", "method"))
    drifted = gauge("mlops_drift_feature_drifted", "1 if the feature's drift test fired", ("feature",))
    for name, result in summary["features"].items():
        if result["method"] is not None:
            score.labels(model, name, result["method"]).set(_num(result["score"]))
        drifted.labels(model, name).set(int(result["drifted"]))
    prediction = summary.get("prediction")
    pred_score = gauge(
        "mlops_drift_prediction_score",
        "Drift statistic of the model's one output (not multiclass)",
        ("method",),
    )
    pred_drifted = gauge("mlops_drift_prediction_drifted", "1 if the drift test of any model output fired")
    if prediction and prediction["method"] is not None and prediction["score"] is not None:
        pred_score.labels(model, prediction["method"]).set(_num(prediction["score"]))
    tested = [r for r in summary.get("predictions", {}).values() if r["method"] is not None]
    if tested:
        pred_drifted.labels(model).set(int(any(r["drifted"] for r in tested)))
    out_score = gauge(
        "mlops_drift_prediction_output_score", "Drift statistic per model output", ("output", "method")
    )
    out_drifted = gauge(
        "mlops_drift_prediction_output_drifted", "1 if the output's drift test fired", ("output",)
    )
    for name, result in summary.get("predictions", {}).items():
        if result["method"] is not None:
            out_score.labels(model, name, result["method"]).set(_num(result["score"]))
            out_drifted.labels(model, name).set(int(result["drifted"]))
    target = summary.get("target") or {}
    target_score = gauge("mlops_drift_target_score", "Drift statistic of the true labels", ("method",))
    target_drifted = gauge("mlops_drift_target_drifted", "1 if the true labels' drift test fired")
    if target.get("method") is not None:
        target_score.labels(model, target["method"]).set(_num(target["score"]))
        target_drifted.labels(model).set(int(target["drifted"]))
    gauge("mlops_drift_labelled_rows", "Window rows that carry their true label").labels(model).set(
        target.get("labelled_rows", 0)
    )
    missing = gauge("mlops_drift_missing_rate", "Share of null values in the window", ("feature",))
    unknown = gauge(
        "mlops_drift_unknown_category_rate", "Share of values outside the schema's categories", ("feature",)
    )
    for name, rate in summary["rates"]["current"].items():
        missing.labels(model, name).set(_num(rate["missing_rate"]))
        if rate["unknown_category_rate"] is not None:
            unknown.labels(model, name).set(_num(rate["unknown_category_rate"]))
    rows = gauge("mlops_drift_rows", "Rows compared", ("dataset",))
    for dataset, count in summary["rows"].items():
        rows.labels(model, dataset).set(count)
    gauge("mlops_drift_skipped_files", "Damaged or unreadable log files skipped").labels(model).set(
        summary["files"]["skipped"]
    )
    return registry


def text(registry: Any) -> bytes:
    """The registry in Prometheus text exposition format."""
    from prometheus_client import generate_latest

    return generate_latest(registry)


def write_textfile(path: Path, registry: Any) -> None:
    """Write the metrics atomically (for a textfile collector or a scrape of a static file)."""
    files.write_bytes(path, text(registry))
    log.info("drift: metrics -> %s", path)


def push(url: str, registry: Any, model: str, timeout: float = 10.0) -> None:
    """Replace this model's group on the Pushgateway (job mlops_drift, grouping key model).

    Raises:
        MetricsPushFailed: the gateway is unreachable or refused the metrics.
    """
    from prometheus_client import push_to_gateway

    try:
        push_to_gateway(url, job=JOB, registry=registry, grouping_key={"model": model}, timeout=timeout)
    except OSError as e:  # urllib's URLError/HTTPError are OSErrors
        raise MetricsPushFailed(f"pushgateway {url}: push of the drift metrics failed ({e})") from e
    log.info("drift: metrics pushed to %s (job %s, model %s)", url, JOB, model)
