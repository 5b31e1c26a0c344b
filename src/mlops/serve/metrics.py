"""metrics: the server's Prometheus metrics and their exposition.

With several worker processes, prometheus_client runs in multiprocess mode: `PROMETHEUS_MULTIPROC_DIR`
is set by the supervisor before any worker imports prometheus_client, and a scrape of any worker
aggregates the files of all of them. Without it (one process, tests) a private registry is used.

Metric names (all prefixed `mlops_serve_`):
    requests_total{route,method,status}        counter, route is the template, e.g. /v2/models/{name}/infer
    request_duration_seconds{route}            histogram of the whole request, body read to response sent
    batch_rows                                 histogram of rows per forward pass (the micro-batch size)
    predictions_total{model,version,class}     counter of predicted classes
    model_info{model,version,sha256}           gauge = 1 once the model is loaded
    prediction_log_records_total{outcome}      counter: written | dropped (sink slow or full) | failed
"""

from __future__ import annotations

import os
from typing import Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
)

LATENCY_BUCKETS = (
    0.0005,
    0.001,
    0.002,
    0.003,
    0.005,
    0.0075,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
    10.0,
)
BATCH_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)


class Metrics:
    """The metric objects of one worker process (child series are cached: no label lookups per request)."""

    def __init__(self) -> None:
        from prometheus_client import values

        # multiprocess only if the env var was set before prometheus_client was first imported
        self.multiprocess = bool(os.environ.get("PROMETHEUS_MULTIPROC_DIR")) and (
            values.ValueClass is not values.MutexValue
        )
        reg = CollectorRegistry(auto_describe=True)
        self._own = reg
        self.requests = Counter(
            "mlops_serve_requests",
            "HTTP requests by route, method and status",
            ["route", "method", "status"],
            registry=reg,
        )
        self.latency = Histogram(
            "mlops_serve_request_duration_seconds",
            "request latency by route",
            ["route"],
            buckets=LATENCY_BUCKETS,
            registry=reg,
        )
        self.batch_rows = Histogram(
            "mlops_serve_batch_rows",
            "rows per forward pass (micro-batch size)",
            buckets=BATCH_BUCKETS,
            registry=reg,
        )
        self.predictions = Counter(
            "mlops_serve_predictions", "predicted classes", ["model", "version", "class"], registry=reg
        )
        self.model_info = Gauge(
            "mlops_serve_model_info",
            "the model this server has loaded (value 1)",
            ["model", "version", "sha256"],
            registry=reg,
            multiprocess_mode="max",
        )
        self.predlog = Counter(
            "mlops_serve_prediction_log_records",
            "prediction log records by outcome",
            ["outcome"],
            registry=reg,
        )
        self._children: dict[tuple[str, ...], Any] = {}
        self.predlog_written = self.predlog.labels("written")
        self.predlog_dropped = self.predlog.labels("dropped")
        self.predlog_failed = self.predlog.labels("failed")
        self.observe_batch = self.batch_rows.observe

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        """Count one finished request and its latency."""
        key = (route, method, str(status))
        pair = self._children.get(key)
        if pair is None:
            pair = self._children[key] = (self.requests.labels(*key), self.latency.labels(route))
        pair[0].inc()
        pair[1].observe(seconds)

    def predicted(self, model: str, version: str, labels: list[str]) -> None:
        """Count predicted classes."""
        if len(labels) == 1:
            counts = {labels[0]: 1}
        else:
            counts: dict[str, int] = {}
            for label in labels:
                counts[label] = counts.get(label, 0) + 1
        for label, n in counts.items():
            key = ("pred", model, version, label)
            child = self._children.get(key)
            if child is None:
                child = self._children[key] = self.predictions.labels(model, version, label)
            child.inc(n)

    def exposition(self) -> tuple[bytes, str]:
        """The text exposition of every worker's metrics and its content type."""
        if self.multiprocess:
            from prometheus_client import multiprocess

            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
        else:
            registry = self._own
        return generate_latest(registry), CONTENT_TYPE_LATEST
