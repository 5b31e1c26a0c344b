"""batching: dynamic micro-batching of concurrent requests into one forward pass.

Requests (already validated and encoded into float32 feature rows) wait in a bounded queue. A batch
takes what is queued, up to `max_batch_size` rows, optionally waiting up to `max_wait_ms` for more, runs
one forward pass over the concatenated rows and hands each request its slice: its rows of the output
(`[rows]`, or `[rows, classes]` for a multiclass model, split along the first axis). With `max_wait_ms: 0` a
batch never waits: it holds whatever the event loop's runnable request handlers queued before it ran,
which is the right default for a model whose forward pass costs microseconds. A full queue rejects
the request at once (`Overloaded`, HTTP 503) rather than letting latency grow without bound.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable

import numpy as np

from mlops.errors import MlopsError

log = logging.getLogger(__name__)


class Overloaded(MlopsError):
    """The batch queue is full; the client should retry later (the answer carries `Retry-After`)."""

    exit_code = 1
    http_status = 503
    retry_after_s = 1  # the queue drains in milliseconds; a second is the smallest Retry-After there is


class Batcher:
    """Collects concurrent requests into batches for `forward` (float32 rows -> the task's outputs, one
    per row along the first axis: probabilities, class probabilities or predicted values).

    No task of its own: the first request queued schedules a batch with `call_soon` (or `call_later`
    with `max_wait_ms`), so the batch runs after every request handler that was already runnable in
    this event-loop iteration has queued its rows; one forward pass serves them all, in arrival order.
    What is still queued (more than `max_batch_size` rows) runs in the next iteration, after the
    handlers of this batch answered and new requests were read: no request waits behind more than
    the batches queued before it.
    """

    def __init__(
        self,
        forward: Callable[[np.ndarray], np.ndarray],
        max_batch_size: int,
        max_wait_ms: float,
        queue_size: int,
        on_batch: Callable[[int], None] | None = None,
    ):
        self.forward = forward
        self.max_rows = max_batch_size
        self.max_wait = max_wait_ms / 1000.0
        self.queue_size = queue_size
        self.on_batch = on_batch or (lambda rows: None)
        self._queue: deque[tuple[np.ndarray, asyncio.Future]] = deque()
        self._rows = 0  # rows queued
        self._loop: asyncio.AbstractEventLoop | None = None
        self._scheduled: asyncio.Handle | asyncio.TimerHandle | None = None
        self._closing = False

    def start(self) -> None:
        """Bind to the running event loop."""
        self._loop = asyncio.get_running_loop()

    async def submit(self, rows: np.ndarray) -> np.ndarray:
        """Queue `rows` for the next forward pass; return their outputs (the forward pass's rows for them)."""
        if self._closing:
            raise Overloaded("server is shutting down")
        queue = self._queue
        if len(queue) >= self.queue_size:
            raise Overloaded(f"inference queue full ({self.queue_size} requests waiting); retry later")
        loop = self._loop
        fut = loop.create_future()
        queue.append((rows, fut))
        self._rows += len(rows)
        if self._scheduled is None:
            if self.max_wait > 0 and self._rows < self.max_rows:
                self._scheduled = loop.call_later(self.max_wait, self._run)
            else:
                self._scheduled = loop.call_soon(self._run)
        elif self._rows >= self.max_rows and isinstance(self._scheduled, asyncio.TimerHandle):
            self._scheduled.cancel()  # a full batch does not wait
            self._scheduled = loop.call_soon(self._run)
        return await fut

    async def stop(self) -> None:
        """Finish every queued request; later submissions are refused (Overloaded)."""
        self._closing = True
        if self._scheduled is not None:
            self._scheduled.cancel()
            self._scheduled = None
        while self._queue:
            self._batch()
            await asyncio.sleep(0)

    def _run(self) -> None:
        self._scheduled = None
        if not self._queue:
            return
        self._batch()
        if self._queue and not self._closing:
            # the rest after this batch's handlers (and newly read requests) had their turn
            self._scheduled = self._loop.call_soon(self._run)

    def _batch(self) -> None:
        queue = self._queue
        batch = [queue.popleft()]
        rows = len(batch[0][0])
        while queue and rows + len(queue[0][0]) <= self.max_rows:
            item = queue.popleft()
            batch.append(item)
            rows += len(item[0])
        self._rows -= rows
        self._process(batch, rows)

    def _process(self, batch: list[tuple[np.ndarray, asyncio.Future]], rows: int) -> None:
        try:
            x = batch[0][0] if len(batch) == 1 else np.concatenate([item[0] for item in batch])
            out = self.forward(x)
        except Exception as e:  # noqa: BLE001 - every waiting request must learn about the failure
            log.exception("forward pass over %d rows failed", rows)
            for _, fut in batch:
                if not fut.done():
                    fut.set_exception(e)
            return
        self.on_batch(rows)
        start = 0
        for x, fut in batch:
            end = start + len(x)
            if not fut.done():
                fut.set_result(out[start:end])  # rows, whatever the output's width
            start = end
