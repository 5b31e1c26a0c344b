"""TEST DOUBLE: a webhook receiver on 127.0.0.1 that records what Alertmanager POSTs to it and answers
200. It stands in for the retrain trigger (`mlops trigger-retrain --listen`, whose own tests cover what it
does with a notification) so the Alertmanager routing test observes only Alertmanager's behaviour: which
alerts reach the retrain route, in what payload."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


class Recorder:
    """The POSTs received: (path, parsed JSON body)."""

    def __init__(self) -> None:
        self.posts: list[tuple[str, Any]] = []
        self._cond = threading.Condition()

    def add(self, path: str, body: Any) -> None:
        with self._cond:
            self.posts.append((path, body))
            self._cond.notify_all()

    def wait(self, n: int, timeout: float) -> list[tuple[str, Any]]:
        """Wait until `n` POSTs arrived (or the timeout passed); return what arrived."""
        deadline = time.monotonic() + timeout
        with self._cond:
            while len(self.posts) < n and time.monotonic() < deadline:
                self._cond.wait(deadline - time.monotonic())
            return list(self.posts)


@contextmanager
def running() -> Iterator[tuple[str, Recorder]]:
    """Start the receiver on a free port; yield (base URL, recorder); stop it."""
    recorder = Recorder()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802 - http.server's name
            raw = self.rfile.read(int(self.headers.get("Content-Length", 0)))
            try:
                body = json.loads(raw)
            except ValueError:
                body = raw.decode(errors="replace")
            recorder.add(self.path, body)
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", recorder
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)
