"""The scaffolding every labelled HTTP TEST DOUBLE shares (forge comments, merge requests, CI triggers): a
threaded HTTP server on a free 127.0.0.1 port that records each request and hands it to the double's
`handle(request) -> Reply`. The doubles imitate only what cannot run here (GitHub, GitLab, Jenkins APIs)
and say so in their module docstrings.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit


@dataclass
class Request:
    """One request as the double saw it (header names lower-cased; `query` values are lists)."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    raw: bytes

    @property
    def body(self) -> str | None:
        return self.raw.decode() if self.raw else None

    def json(self) -> Any:
        return json.loads(self.raw)

    def __getitem__(self, key: str) -> Any:  # r["method"], r["path"], r["headers"], r["body"], r["query"]
        return getattr(self, key)

    def first(self, key: str, default: str = "") -> str:
        """The first value of a query parameter."""
        return self.query.get(key, [default])[0]


@dataclass
class Reply:
    """What the double answers: a status, a JSON body (None: empty) and extra headers."""

    status: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)


def json_body(request: Request) -> tuple[Any, Reply | None]:
    """The request's JSON body, or the reply the real APIs give to a missing or invalid one (415/400)."""
    if request.headers.get("content-type", "").split(";")[0] != "application/json":
        return None, Reply(415, {"message": "expected application/json"})
    try:
        return request.json(), None
    except ValueError:
        return None, Reply(400, {"message": "invalid JSON"})


def _handler(double: Any) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:  # keep test output clean
            pass

        def _handle(self) -> None:
            parts = urlsplit(self.path)
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            request = Request(
                self.command,
                parts.path,
                parse_qs(parts.query),
                {k.lower(): v for k, v in self.headers.items()},
                raw,
            )
            double.requests.append(request)
            reply = double.handle(request)
            data = b"" if reply.body is None else json.dumps(reply.body).encode()
            self.send_response(reply.status)
            if reply.body is not None:
                self.send_header("Content-Type", "application/json")
            for key, value in reply.headers.items():
                self.send_header(key, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_POST = do_PATCH = do_PUT = do_DELETE = _handle

    return Handler


class Served:
    """Context manager: serve `double` (an object with `requests: list`, `url: str` and
    `handle(Request) -> Reply`) on a free loopback port; yields the double with `url` set."""

    def __init__(self, double: Any):
        self.double = double

    def __enter__(self) -> Any:
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self.double))
        self.double.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        # shutdown() waits for the loop's next poll: 0.5 s by default, on every test that uses a double
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.02,), daemon=True)
        self.thread.start()
        return self.double

    def __exit__(self, *exc: Any) -> None:
        self.server.shutdown()
        self.server.server_close()
