"""batching: dynamic micro-batching of concurrent requests into one forward pass.

Requests (already validated and encoded into float32 feature rows) wait in a bounded queue. One task
per worker takes what is queued, up to `max_batch_size` rows, optionally waiting up to `max_wait_ms` for
more, runs one forward pass over the concatenated rows and hands each request its slice. With
`max_wait_ms: 0` a batch never waits: it holds whatever arrived while the previous forward pass ran,
which is the right default for a model whose forward pass costs microseconds. A full queue rejects
the request at once (`Overloaded`, HTTP 503) rather than letting latency grow without bound.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable

import numpy as np

from mlops.errors import MlopsError

log = logging.getLogger(__name__)


class Overloaded(MlopsError):
    """The batch queue is full; the client should retry later."""

    exit_code = 1
    http_status = 503


class Batcher:
    """Collects concurrent requests into batches for `forward` (float32 rows -> probabilities)."""

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
        self._wakeup = asyncio.Event()
        self._task: asyncio.Task | None = None
        self._closing = False

    def start(self) -> None:
        """Start the batching task on the running event loop."""
        self._task = asyncio.get_running_loop().create_task(self._run(), name="batcher")

    async def submit(self, rows: np.ndarray) -> np.ndarray:
        """Queue `rows` for the next forward pass; return their probabilities."""
        if self._closing:
            raise Overloaded("server is shutting down")
        if len(self._queue) >= self.queue_size:
            raise Overloaded(f"inference queue full ({self.queue_size} requests waiting); retry later")
        fut = asyncio.get_running_loop().create_future()
        self._queue.append((rows, fut))
        self._wakeup.set()
        return await fut

    async def stop(self) -> None:
        """Finish every queued request, then stop the task."""
        self._closing = True
        self._wakeup.set()
        if self._task is not None:
            await self._task

    async def _run(self) -> None:
        queue = self._queue
        while True:
            if not queue:
                if self._closing:
                    return
                self._wakeup.clear()
                await self._wakeup.wait()
                continue
            if self.max_wait > 0 and not self._closing:
                await self._fill(time.perf_counter() + self.max_wait)
            batch = [queue.popleft()]
            rows = len(batch[0][0])
            while queue and rows + len(queue[0][0]) <= self.max_rows:
                item = queue.popleft()
                batch.append(item)
                rows += len(item[0])
            self._process(batch, rows)
            # let the handlers of this batch (and newly arrived requests) run before the next pass
            await asyncio.sleep(0)

    async def _fill(self, deadline: float) -> None:
        """Wait until the queue holds a full batch or the deadline passes."""
        while sum(len(x) for x, _ in self._queue) < self.max_rows and not self._closing:
            remaining = deadline - time.perf_counter()
            if remaining <= 0:
                return
            self._wakeup.clear()
            try:
                await asyncio.wait_for(self._wakeup.wait(), remaining)
            except TimeoutError:
                return

    def _process(self, batch: list[tuple[np.ndarray, asyncio.Future]], rows: int) -> None:
        try:
            x = batch[0][0] if len(batch) == 1 else np.concatenate([item[0] for item in batch])
            proba = self.forward(x)
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
                fut.set_result(proba[start:end])
            start = end
