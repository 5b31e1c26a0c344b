"""predlog: sampled, non-blocking prediction log for drift monitoring.

A sampled fraction (`serve.prediction_log.rate`) of requests is handed to a bounded in-memory queue with
`put_nowait`; a background thread turns them into JSON lines, one per row:

    {"ts": "2026-11-26T22:40:00.123456Z", "model": "churn-mlp", "model_version": "999a5685f64f",
     "request_id": "42", "inputs": {"tenure": 12, ..., "contract": "One year"},
     "probability": 0.31, "label": "No"}

and writes them to files `predictions-<UTC time>-<pid>-<seq>.jsonl` under `serve.prediction_log.dir`
(a local directory or any fsspec URL, e.g. s3://bucket/predictions). A file is written once its
records reach `max_file_bytes` or `flush_interval_s` has passed, and at shutdown; a local file appears
under its final name only when complete (a write that fails, on a full disk say, removes its temp file).
When the queue is full (the sink is slow or down) records are dropped and counted
(`mlops_serve_prediction_log_records_total{outcome="dropped"}`): the request path never waits for, or
fails because of, the log. A location that cannot be opened or created (a read-only or mis-mounted
volume) is logged as an error and never stops the server: each flush retries, and what it cannot write
is counted as `failed`.

The outputs are those of the model's task, under their served names (`mlops.task.Task.outputs` of the
row, which `Task.logged_outputs` reads back): binary `probability` and `label` (above), multiclass
`probabilities` (the N class probabilities, in the model's class order) and `label`, regression
`prediction`.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import queue
import random
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

import msgspec

from mlops.params.serve import PredictionLogParams
from mlops.serve.protocol import OUTPUTS

log = logging.getLogger(__name__)
_STOP = object()


class PredictionLog:
    """The sampler, the bounded queue and the writer thread of one worker process."""

    def __init__(
        self,
        params: PredictionLogParams,
        model: str,
        version: str,
        on_written: Callable[[int], None],
        on_dropped: Callable[[int], None],
        on_failed: Callable[[int], None],
        outputs: Sequence[str] = OUTPUTS,
    ):
        """Args:
        params: `serve.prediction_log`.
        model, version: what every record names.
        on_written, on_dropped, on_failed: counters of records by outcome (called with a count).
        outputs: the record keys of the task's outputs, in the order `submit` takes their values
            (`Task.output_names`; binary's by default).
        """
        self.params = params
        self.outputs = tuple(outputs)
        self.rate = params.rate
        self.enabled = params.rate > 0
        self.model, self.version = model, version
        self.on_written, self.on_dropped, self.on_failed = on_written, on_dropped, on_failed
        self._queue: queue.Queue = queue.Queue(maxsize=params.queue_size)
        self._thread: threading.Thread | None = None
        self._seq = 0
        self._random = random.random
        self._fs: Any = None
        self._root = ""

    def start(self) -> None:
        """Open the sink and start the writer thread (no-op when the rate is 0)."""
        if not self.enabled:
            return
        import fsspec

        try:
            self._fs, self._root = fsspec.core.url_to_fs(self.params.dir)
        except Exception as e:  # noqa: BLE001 - an unknown scheme or a missing fsspec plugin
            # the log is an optional sink: the model keeps serving, every sampled record counts as failed
            log.error(
                "prediction log: %s is not a usable location (%s); predictions are not logged",
                self.params.dir,
                e,
            )
            self._fs = None
        else:
            try:
                self._fs.makedirs(self._root, exist_ok=True)
            except Exception as e:  # noqa: BLE001 - a read-only or mis-mounted volume, a file in the way
                log.error(
                    "prediction log: cannot create %s (%s); serving goes on, each flush retries and counts "
                    "the records it cannot write as failed",
                    self.params.dir,
                    e,
                )
        self._thread = threading.Thread(target=self._run, name="prediction-log", daemon=True)
        self._thread.start()

    def submit(self, request_id: str | None, columns: dict[str, list[Any]], *outputs: list[Any]) -> None:
        """Maybe log one request; never blocks, never raises.

        Args:
            request_id: the request's `id`, or None.
            columns: the raw inputs (name -> one value per row).
            outputs: one list per output named in `outputs`, one value per row (binary: probabilities,
                labels; multiclass: a list of N class probabilities per row, labels; regression: values).
        """
        if not self.enabled or self._random() >= self.rate:
            return
        try:
            self._queue.put_nowait((time.time(), request_id, columns, outputs))
        except queue.Full:
            self.on_dropped(len(outputs[0]))

    def stop(self, timeout: float) -> None:
        """Flush what is queued and stop the writer, waiting at most `timeout` seconds."""
        if self._thread is None:
            return
        try:
            self._queue.put(_STOP, timeout=timeout)
        except queue.Full:
            log.warning("prediction log: queue still full at shutdown; unflushed records are lost")
            return
        self._thread.join(timeout)

    # ------------------------------------------------------------ writer thread
    def _run(self) -> None:
        encoder = msgspec.json.Encoder()
        buf = bytearray()
        rows = 0
        last = time.monotonic()
        interval = self.params.flush_interval_s
        while True:
            try:
                item = self._queue.get(timeout=max(0.05, interval - (time.monotonic() - last)))
            except queue.Empty:
                item = None
            if item is _STOP:
                self._flush(buf, rows)
                return
            if item is not None:
                ts, request_id, columns, outputs = item
                stamp = dt.datetime.fromtimestamp(ts, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
                names = list(columns)
                keys = self.outputs
                for i in range(len(outputs[0])):
                    record = {
                        "ts": stamp,
                        "model": self.model,
                        "model_version": self.version,
                        "request_id": request_id,
                        "inputs": {n: columns[n][i] for n in names},
                    }
                    for key, values in zip(keys, outputs, strict=True):
                        record[key] = values[i]
                    buf += encoder.encode(record)
                    buf += b"\n"
                rows += len(outputs[0])
            if rows and (len(buf) >= self.params.max_file_bytes or time.monotonic() - last >= interval):
                self._flush(buf, rows)
                buf = bytearray()
                rows = 0
                last = time.monotonic()
            elif not rows:
                last = time.monotonic()

    def _flush(self, buf: bytearray, rows: int) -> None:
        if not rows:
            return
        self._seq += 1
        stamp = dt.datetime.now(dt.UTC).strftime("%Y%m%dT%H%M%S")
        name = f"predictions-{stamp}-{os.getpid()}-{self._seq:06d}.jsonl"
        path = f"{self._root.rstrip('/')}/{name}"
        try:
            self.write(path, bytes(buf))
        except Exception as e:  # noqa: BLE001 - a broken sink must never take the server down
            log.warning("prediction log: writing %s failed (%s); %d records lost", path, e, rows)
            self.on_failed(rows)
            return
        self.on_written(rows)

    def write(self, path: str, data: bytes) -> None:
        """Write one complete file (a temp name renamed into place on local filesystems)."""
        if self._fs is None:
            raise OSError(f"{self.params.dir}: not a usable location")
        protocols = self._fs.protocol if isinstance(self._fs.protocol, tuple) else (self._fs.protocol,)
        local = "file" in protocols or "local" in protocols
        tmp = f"{path}.tmp" if local else path
        if local:  # the directory may have failed at start (a volume mounted late): try again
            self._fs.makedirs(self._root, exist_ok=True)
        try:
            with self._fs.open(tmp, "wb") as f:
                f.write(data)
        except BaseException:
            if local:  # a full disk: the partial temp file would hold the space it has for good
                with contextlib.suppress(OSError):
                    self._fs.rm(tmp)
            raise
        if local:
            self._fs.mv(tmp, path)
