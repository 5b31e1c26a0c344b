"""webhook: a small HTTP receiver for Alertmanager that starts the retrain pipeline (`mlops trigger-retrain
--listen HOST:PORT`).

- `POST /alertmanager`: an Alertmanager webhook notification (version "4"). A notification whose
  `status` is `firing` calls `trigger_retrain` once, with a reason built from the firing alerts' names
  and labels; a `resolved` one does nothing. Answers 200 with the outcome as JSON
  (`{"triggered", "provider", "message", "url"}`), 400 naming the field for a malformed body, 401 when
  `MLOPS_WEBHOOK_TOKEN` is set and the request's `Authorization: Bearer` differs, 502 when the CI refused
  (Alertmanager then retries), 500 on a configuration error.
- `GET /healthz`: 200 `{"status": "ok"}`.

Alertmanager repeats a firing notification every `repeat_interval`; the trigger's cooldown turns repeats
into no-ops. The receiver also remembers its own last trigger (the seconds before a dispatched run is
visible in the CI's API) and serialises triggers, so a burst of notifications starts one run.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import signal
import threading
from collections.abc import Callable, Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from mlops.errors import ConfigError, MlopsError
from mlops.monitor.trigger import TriggerResult, trigger_retrain
from mlops.params.retrain import RetrainParams

log = logging.getLogger(__name__)

MAX_BODY = 1 << 20  # Alertmanager notifications are a few KB; a larger body is not one
TOKEN_ENV = "MLOPS_WEBHOOK_TOKEN"


class BadNotification(ValueError):
    """The body is not an Alertmanager webhook notification (the message names the field)."""


def parse(raw: bytes) -> dict[str, Any]:
    """Validate an Alertmanager webhook body (version 4); return it.

    Raises:
        BadNotification: naming the field at fault.
    """
    try:
        doc = json.loads(raw)
    except ValueError as e:
        raise BadNotification(f"body: not JSON ({e})") from None
    if not isinstance(doc, dict):
        raise BadNotification("body: expected a JSON object (an Alertmanager notification)")
    if doc.get("version") != "4":
        raise BadNotification(f'version: expected "4" (Alertmanager webhook), got {doc.get("version")!r}')
    if doc.get("status") not in ("firing", "resolved"):
        raise BadNotification(f'status: expected "firing" or "resolved", got {doc.get("status")!r}')
    alerts = doc.get("alerts")
    if not isinstance(alerts, list):
        raise BadNotification("alerts: expected a list")
    for i, alert in enumerate(alerts):
        if not isinstance(alert, dict):
            raise BadNotification(f"alerts.{i}: expected an object")
        if alert.get("status") not in ("firing", "resolved"):
            raise BadNotification(f'alerts.{i}.status: expected "firing" or "resolved"')
        labels = alert.get("labels")
        if not isinstance(labels, dict) or not all(isinstance(v, str) for v in labels.values()):
            raise BadNotification(f"alerts.{i}.labels: expected an object of strings")
    return doc


def reason_of(doc: dict[str, Any]) -> str:
    """`alertmanager: <alertname> (label=value, ...); ...` for the firing alerts (names deduplicated)."""
    parts: list[str] = []
    for alert in doc["alerts"]:
        if alert["status"] != "firing":
            continue
        labels = dict(alert["labels"])
        name = labels.pop("alertname", "alert")
        shown = ", ".join(f"{k}={v}" for k, v in sorted(labels.items()) if k not in ("severity",))
        part = f"{name} ({shown})" if shown else name
        if part not in parts:
            parts.append(part)
    return "alertmanager: " + ("; ".join(parts) or "firing notification")


class Receiver:
    """The receiver's state: params, env, the last trigger it made, one trigger at a time."""

    def __init__(
        self,
        params: RetrainParams,
        env: Mapping[str, str] = os.environ,
        trigger: Callable[..., TriggerResult] = trigger_retrain,
    ):
        self.params, self.env, self.trigger = params, env, trigger
        self.lock = threading.Lock()
        self.last: TriggerResult | None = None
        self.last_at: dt.datetime | None = None

    def notify(self, doc: dict[str, Any]) -> TriggerResult:
        """Handle one validated notification."""
        if doc["status"] != "firing":
            return TriggerResult(False, self.params.provider, "resolved notification: nothing to do", None)
        reason = reason_of(doc)
        with self.lock:
            now = dt.datetime.now(dt.UTC)
            window = dt.timedelta(hours=self.params.cooldown_hours)
            if self.last is not None and self.last_at is not None and now - self.last_at < window:
                return TriggerResult(
                    False,
                    self.last.provider,
                    f"not triggered: this receiver triggered at {self.last_at:%Y-%m-%dT%H:%M:%SZ}, within the "
                    f"{self.params.cooldown_hours:g}h cooldown",
                    self.last.url,
                )
            result = self.trigger(self.params, reason, self.env)
            if result.triggered:
                self.last, self.last_at = result, now
            log.info("webhook: %s", result.message)
            return result


def _handler(receiver: Receiver) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "mlops-webhook"

        def log_message(self, fmt: str, *args: Any) -> None:
            log.debug("webhook: " + fmt, *args)

        def _reply(self, status: int, obj: Any) -> None:
            data = json.dumps(obj).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            if self.path == "/healthz":
                return self._reply(200, {"status": "ok"})
            return self._reply(404, {"error": f"{self.path}: not found (POST /alertmanager, GET /healthz)"})

        def do_POST(self) -> None:
            if self.path != "/alertmanager":
                return self._reply(404, {"error": f"{self.path}: not found (POST /alertmanager)"})
            token = receiver.env.get(TOKEN_ENV, "")
            if token and self.headers.get("Authorization") != f"Bearer {token}":
                return self._reply(401, {"error": "Authorization: expected the Bearer token"})
            try:
                length = int(self.headers.get("Content-Length") or 0)
            except ValueError:
                return self._reply(400, {"error": "Content-Length: not a number"})
            if length > MAX_BODY:
                return self._reply(413, {"error": f"body: over {MAX_BODY} bytes"})
            try:
                doc = parse(self.rfile.read(length))
            except BadNotification as e:
                return self._reply(400, {"error": str(e)})
            try:
                result = receiver.notify(doc)
            except ConfigError as e:
                log.error("webhook: %s", e)
                return self._reply(500, {"error": str(e)})
            except MlopsError as e:
                log.error("webhook: %s", e)
                return self._reply(502, {"error": str(e)})
            return self._reply(
                200,
                {
                    "triggered": result.triggered,
                    "provider": result.provider,
                    "message": result.message,
                    "url": result.url,
                },
            )

    return Handler


def address(listen: str) -> tuple[str, int]:
    """`HOST:PORT` -> (host, port); ConfigError naming --listen otherwise."""
    host, sep, port = listen.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise ConfigError(f"--listen {listen!r}: expected HOST:PORT, e.g. 127.0.0.1:9095")
    return host.strip("[]"), int(port)


class _Server(ThreadingHTTPServer):
    # socketserver listens with a backlog of 5: a burst of notifications (Alertmanager sending a group's
    # alerts at once, several replicas of it) had its connections reset
    request_queue_size = 128


def serve(params: RetrainParams, listen: str, env: Mapping[str, str] = os.environ) -> None:
    """Run the receiver until SIGTERM or SIGINT."""
    host, port = address(listen)
    try:
        server = _Server((host, port), _handler(Receiver(params, env)))
    except OSError as e:
        raise ConfigError(f"--listen {listen}: cannot bind ({e})") from e
    stop = threading.Event()

    def _stop(*_: Any) -> None:
        if not stop.is_set():
            stop.set()
            threading.Thread(target=server.shutdown, daemon=True).start()

    previous = signal.signal(signal.SIGTERM, _stop)
    log.info("webhook: listening on http://%s:%d (POST /alertmanager, GET /healthz)", host, port)
    try:
        server.serve_forever()
    finally:
        signal.signal(signal.SIGTERM, previous)
        server.server_close()
    log.info("webhook: stopped")
