"""prometheus: the server's Prometheus metrics and their exposition.

With several worker processes, prometheus_client runs in multiprocess mode: `PROMETHEUS_MULTIPROC_DIR`
is set by the supervisor before any worker imports prometheus_client, and a scrape of any worker
aggregates the files of all of them. Without it (one process, tests) a private registry is used.

Cost per request: in multiprocess mode every counter increment and histogram observation is a locked
write into an mmap file (several µs per request for the four series a request touches). The hot path
therefore only appends to plain lists; `flush`, scheduled once per event-loop iteration with
`call_soon` (set by the app), adds the sums: one write per series and histogram bucket touched, however
many requests completed in that iteration. A flush runs right after the responses of its iteration
were written, before this worker reads another request, and before any exposition.

Metric names (all prefixed `mlops_serve_`):
    requests_total{route,method,status}        counter, route is the template, e.g. /v2/models/{name}/infer
    request_duration_seconds{route}            histogram of the whole request, body read to response sent
    batch_rows                                 histogram of rows per forward pass (the micro-batch size)
    predictions_total{model,version,class}     counter of predicted classes (classification models)
    predicted_value{model,version}             histogram of predicted values, in the target's units
                                               (regression models; buckets from the training target's
                                               mean and std, `value_buckets`)
    model_info{model,version,sha256}           gauge = 1 once the model is loaded
    prediction_log_records_total{outcome}      counter: written | dropped (sink slow or full) | failed
"""

from __future__ import annotations

import os
from bisect import bisect_left
from collections.abc import Callable
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
VALUE_SPREAD = (-3, -2, -1, -0.5, -0.25, 0, 0.25, 0.5, 0.75, 1, 1.5, 2, 3, 4, 6)
"""Bucket bounds of the predicted-value histogram, in standard deviations of the training target from its
mean (a right-skewed target, a price, reaches several deviations above the mean)."""


def value_buckets(meta: dict[str, Any]) -> tuple[float, ...]:
    """The predicted-value histogram's buckets for a regression model (model.json `meta`): the training
    target's mean + k std for k in VALUE_SPREAD, to 3 significant digits; prometheus_client's default
    buckets where model.json records no target scale."""
    scale = (meta.get("label") or {}).get("scale") or {}
    mean, std = scale.get("mean"), scale.get("std")
    if mean is None or not std:
        return tuple(b for b in Histogram.DEFAULT_BUCKETS if b != float("inf"))
    return tuple(sorted({float(f"{mean + k * std:.3g}") for k in VALUE_SPREAD}))


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
        # the hot path only appends here; `flush` writes the sums (see the module docstring)
        self._requests: list[tuple[str, str, int, float]] = []
        self._batches: list[int] = []
        self._predicted: dict[tuple[str, str, str], int] = {}
        self._values: dict[tuple[str, str], list[float]] = {}
        self.predicted_value: Histogram | None = None  # a regression model's (`track_values`)
        self.value_buckets: tuple[float, ...] = ()
        self._armed = False
        self.call_soon: Callable[[Callable[[], None]], Any] | None = None

    def _arm(self) -> None:
        if self.call_soon is None:
            self.flush()
        elif not self._armed:
            self._armed = True
            self.call_soon(self.flush)

    def observe(self, route: str, method: str, status: int, seconds: float) -> None:
        """Count one finished request and its latency."""
        self._requests.append((route, method, status, seconds))
        self._arm()

    def observe_batch(self, rows: int) -> None:
        """Count one forward pass and its rows (flushed with the observations of its requests)."""
        self._batches.append(rows)
        if self.call_soon is None:
            self.flush()

    def predicted(self, model: str, version: str, labels: list[str]) -> None:
        """Count predicted classes."""
        counts = self._predicted
        for label in set(labels) if len(labels) > 1 else labels:
            key = (model, version, label)
            counts[key] = counts.get(key, 0) + labels.count(label)
        self._arm()

    def track_values(self, buckets: tuple[float, ...]) -> None:
        """Create the predicted-value histogram (for a regression model, once it is loaded)."""
        self.value_buckets = tuple(buckets)
        self.predicted_value = Histogram(
            "mlops_serve_predicted_value",
            "predicted values (regression), in the target's units",
            ["model", "version"],
            buckets=self.value_buckets,
            registry=self._own,
        )

    def predicted_values(self, model: str, version: str, values: list[float]) -> None:
        """Observe predicted values (a regression model's; `track_values` first)."""
        self._values.setdefault((model, version), []).extend(values)
        self._arm()

    def flush(self) -> None:
        """Write what was observed since the last flush into the metric objects (the mmap files)."""
        self._armed = False
        requests, self._requests = self._requests, []
        batches, self._batches = self._batches, []
        predicted, self._predicted = self._predicted, {}
        observed_values, self._values = self._values, {}
        counts: dict[tuple[str, str, int], int] = {}
        latencies: dict[str, list[float]] = {}
        for route, method, status, seconds in requests:
            key = (route, method, status)
            counts[key] = counts.get(key, 0) + 1
            latencies.setdefault(route, []).append(seconds)
        for (route, method, status), n in counts.items():
            self._child(("req", route, method, status), self.requests, route, method, str(status)).inc(n)
        for route, values in latencies.items():
            _observe_many(self._child(("lat", route), self.latency, route), LATENCY_BUCKETS, values)
        if batches:
            _observe_many(self.batch_rows, BATCH_BUCKETS, batches)
        for (model, version, label), n in predicted.items():
            self._child(("pred", model, version, label), self.predictions, model, version, label).inc(n)
        for (model, version), observed in observed_values.items():
            child = self._child(("value", model, version), self.predicted_value, model, version)
            _observe_many(child, self.value_buckets, observed)

    def _child(self, key: tuple[Any, ...], metric: Any, *labels: str) -> Any:
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def exposition(self) -> tuple[bytes, str]:
        """The text exposition of every worker's metrics and its content type."""
        self.flush()
        if self.multiprocess:
            from prometheus_client import multiprocess

            registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(registry)
        else:
            registry = self._own
        return generate_latest(registry), CONTENT_TYPE_LATEST


def _observe_many(histogram: Any, buckets: tuple[float, ...], values: list[float]) -> None:
    """`histogram.observe(v)` for each value, with one write per bucket hit and one for the sum.

    prometheus_client's Histogram has no bulk observe: this adds to the same per-bucket and sum values
    its `observe` adds to (pinned prometheus-client; tests/serve/test_fastpath.py compares the two).
    """
    if len(values) == 1:
        histogram.observe(values[0])
        return
    hits = [0] * (len(buckets) + 1)  # the last one: +Inf
    for v in values:
        hits[bisect_left(buckets, v)] += 1
    histogram._sum.inc(sum(values))
    for i, n in enumerate(hits):
        if n:
            histogram._buckets[i].inc(n)
