"""app: the Open Inference Protocol REST server as a bare ASGI application.

A framework would cost more per request than the model does (see benchmarks/serving/), so routing,
body limits and error mapping are written out here: a request costs its JSON parse (msgspec), the
validation of each input against the model's feature spec, the preprocessing, its share of one batched
forward pass and the JSON encoding of the answer.

Interoperability: requests are accepted as the reference servers (Triton, KServe) accept them, so their
client libraries work with default settings: no Content-Type, JSON with parameters, gzip/deflate bodies,
and the binary tensor data extension in both directions (`mlops.serve.binary`). No request body yields
a 5xx: every malformed one is a 4xx naming what is wrong.

Lifecycle: the worker answers `/v2/health/live` at once; the model (on `serve.backend`: the ONNX export
on ONNX Runtime, or the weights on torch; sha256 verified on load) is loaded in a background thread,
and only then do `/v2/health/ready`, `/v2/models/{name}/ready` and `infer` succeed (503 before). A
model loaded (and verified) by the supervisor before it forked the worker (ONNX Runtime on one thread)
is handed to `App` instead: the worker is ready as soon as it listens. On
SIGTERM uvicorn stops accepting connections, lets in-flight requests finish within
`serve.grace_period_s`, then the lifespan shutdown drains the batch queue and flushes the prediction log.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import json
import logging
import threading
import time
import zlib
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from mlops import __version__
from mlops.errors import DataError, MlopsError, ModelNotReady
from mlops.params import serve as serve_params
from mlops.serve import binary, openapi, outputs, protocol
from mlops.serve.batching import Batcher
from mlops.serve.encoding import Encoder
from mlops.serve.fastpath import FastPath
from mlops.serve.fastpath import columns as fast_columns
from mlops.serve.predlog import PredictionLog
from mlops.serve.prometheus import Metrics, value_buckets
from mlops.task import REGRESSION

log = logging.getLogger(__name__)
JSON = b"application/json"
OCTETS = b"application/octet-stream"
# Accepted request content types: none (Triton's client sends none), JSON (with any parameters),
# octet-stream (KServe's client, binary extension) and curl's `-d` default, which Triton's documented curl
# examples send. The body is parsed as JSON, or as the binary extension when its header is present.
CONTENT_TYPES = (b"", JSON, OCTETS, b"application/x-www-form-urlencoded")
INFER_ROUTE = "/v2/models/{name}/infer"
JSON_TYPE = (b"content-type", JSON)


@dataclass(frozen=True)
class Settings:
    """Everything a worker needs; travels to worker processes as JSON."""

    model_dir: str
    model_version: str
    params: dict[str, Any]

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, text: str) -> Settings:
        return cls(**json.loads(text))


def load_backend(model_dir: str, backend: str, threads: int) -> Any:
    """The verified model on `backend`: `onnx` (model.onnx on ONNX Runtime; torch is never imported) or
    `torch` (model.safetensors on torch). Its `forward` takes float32 rows [rows, features] and returns
    the task's float64 outputs (mlops.task): positive-class probabilities [rows], class probabilities
    [rows, classes] or predicted values [rows]."""
    if backend == "onnx":
        from mlops import scorer

        return scorer.load_onnx(model_dir, threads)
    import torch

    from mlops import model as model_mod

    torch.set_num_threads(threads)
    with contextlib.suppress(RuntimeError):  # raises if the pool already exists (e.g. in tests)
        torch.set_num_interop_threads(1)
    return model_mod.load(model_dir)


def load_model(model_dir: str, backend: str, threads: int, version: str) -> Any:
    """`load_backend`, then one warm-up forward pass; logs what was loaded and how long it took.

    Raises:
        MlopsError: ModelNotReady or ChecksumMismatch from the backend's loader.
    """
    import numpy as np

    started = time.perf_counter()
    loaded = load_backend(model_dir, backend, threads)
    loaded.forward(np.zeros((1, loaded.preprocessor.width), dtype=np.float32))  # warm-up
    log.info(
        "model %s version %s loaded from %s on %s in %.3fs",
        loaded.name,
        version,
        model_dir,
        loaded.backend,
        time.perf_counter() - started,
    )
    return loaded


def serving_forward(loaded: Any) -> Any:
    """The forward pass the batcher runs: float32 rows [rows, features] -> the task's outputs ([rows], or
    [rows, classes] for multiclass).

    On ONNX Runtime the compiled session is called directly: `InferenceSession.run` checks in Python,
    on every call, that the feed names the graph's inputs and holds no foreign device values, which
    always holds here (one float32 matrix under the graph's input name); skipping it, and the float64
    copy (the answer's floats are the same: float32 -> float64 is exact), saves ~2 µs per forward pass,
    5% of a one-row request. The graph's output is the one model.json `onnx.output` names, as for
    `OnnxModel`. Any other backend (or a runtime without that attribute): `loaded.forward`.
    """
    session = getattr(getattr(loaded, "session", None), "_sess", None)
    if getattr(loaded, "backend", None) != "onnx" or session is None:
        return loaded.forward
    from mlops.scorer import INPUT, OUTPUT

    run, outputs = session.run, [(loaded.metadata.get("onnx") or {}).get("output", OUTPUT)]

    def forward(x: Any) -> Any:
        return run(outputs, {INPUT: x}, None)[0]

    return forward


class HttpError(MlopsError):
    """An HTTP-level rejection (404, 405, 413, 415) with its status."""

    def __init__(self, status: int, message: str):
        super().__init__(message)
        self.http_status = status


class App:
    """The ASGI application of one worker process."""

    def __init__(self, settings: Settings, model: Any = None):
        """Args:
        settings: what the supervisor passes on.
        model: the model already loaded, verified and warmed up (`load_model`), or None to load it
            in a background thread at start-up.
        """
        self.settings = settings
        self._preloaded = model
        self.params = serve_params.convert(settings.params)
        meta = json.loads((Path(settings.model_dir) / "model.json").read_text())
        self.name: str = meta["name"]
        self.version = settings.model_version
        self.model: Any = None
        self.ready = False
        self.error: str | None = None
        self.metrics: Metrics | None = None
        self.batcher: Batcher | None = None
        self.predlog: PredictionLog | None = None
        self.openapi = openapi.document(meta, self.version)
        self.infer_path = f"/v2/models/{self.name}/infer"  # the one path the request fast path serves

    # ------------------------------------------------------------ lifespan
    async def _lifespan(self, receive, send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                loop = asyncio.get_running_loop()
                self.metrics = Metrics()
                self.metrics.call_soon = loop.call_soon  # one metrics flush per event-loop iteration
                if self._preloaded is not None:
                    self._on_loaded(self._preloaded, serving_forward(self._preloaded))
                    self._preloaded = None
                else:
                    threading.Thread(
                        target=self._load, args=(loop,), name="model-loader", daemon=True
                    ).start()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                if self.batcher is not None:
                    await self.batcher.stop()
                if self.predlog is not None:
                    await asyncio.to_thread(self.predlog.stop, self.params.grace_period_s)
                await send({"type": "lifespan.shutdown.complete"})
                return

    def _load(self, loop: asyncio.AbstractEventLoop) -> None:
        """Load and verify the model on `serve.backend`, warm it up; then mark ready on the event loop."""
        try:
            loaded = load_model(
                self.settings.model_dir, self.params.backend, self.params.threads, self.version
            )
        except Exception as e:  # noqa: BLE001 - reported by the readiness endpoints and the log
            log.error("model not loaded: %s", e)
            loop.call_soon_threadsafe(setattr, self, "error", str(e))
            return
        loop.call_soon_threadsafe(self._on_loaded, loaded, serving_forward(loaded))

    def _on_loaded(self, loaded: Any, forward: Any) -> None:
        p, m = self.params, self.metrics
        self.model = loaded
        task = loaded.task  # what the outputs are (model.json), as for every other consumer of the model
        self.output_spec = task.output_spec()
        self.output_names = task.output_names()
        self.encoder = Encoder(loaded.metadata["features"], loaded.preprocessor, self.output_names)
        self.fast = FastPath(loaded.metadata["features"], loaded.preprocessor, self.output_names)
        self.template = protocol.ResponseTemplate(self.name, self.version, self.output_spec)
        self.layout = outputs.layout(task)
        self.regression = task.kind == REGRESSION
        if self.regression:
            m.track_values(value_buckets(loaded.metadata))
        self.batcher = Batcher(forward, p.max_batch_size, p.max_wait_ms, p.queue_size, m.observe_batch)
        self.batcher.start()
        self.predlog = PredictionLog(
            p.prediction_log,
            self.name,
            self.version,
            m.predlog_written.inc,
            m.predlog_dropped.inc,
            m.predlog_failed.inc,
            self.output_names,
        )
        self.predlog.start()
        self.metadata = protocol.encode(protocol.model_metadata(loaded.metadata, self.version))
        m.model_info.labels(self.name, self.version, loaded.metadata["weights"]["sha256"]).set(1)
        # what is allocated by now (runtime, model, app) lives as long as the worker: out of the
        # collector's sight, a full collection (which request garbage triggers now and then) no longer
        # walks it, tens to hundreds of ms with torch imported (benchmarks/serving/request_path.md)
        gc.freeze()
        self.ready = True
        log.info("worker ready: model %s version %s on %s", self.name, self.version, loaded.backend)

    # ------------------------------------------------------------ HTTP
    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http":
            await self._http(scope, receive, send)
        elif scope["type"] == "lifespan":
            await self._lifespan(receive, send)

    async def _http(self, scope, receive, send) -> None:
        started = time.perf_counter()
        method = scope["method"]
        if method == "POST" and scope["path"] == self.infer_path:  # the common case, routed at once
            header_length, retry = None, None
            try:
                body, header_length = await self._infer(scope, receive)
                status, content_type = 200, JSON if header_length is None else OCTETS
            except MlopsError as e:
                status, body, content_type = e.http_status, protocol.encode({"error": str(e)}), JSON
                retry = getattr(e, "retry_after_s", None)
            except Exception as e:  # noqa: BLE001 - one bad request must not take the worker down
                log.exception("%s %s failed", method, scope["path"])
                status, body = 500, protocol.encode({"error": f"internal error: {type(e).__name__}"})
                content_type = JSON
            if status == 200 and header_length is None:
                headers = [JSON_TYPE, (b"content-length", b"%d" % len(body))]
                await send({"type": "http.response.start", "status": 200, "headers": headers})
                await send({"type": "http.response.body", "body": body})
                self.metrics.observe(INFER_ROUTE, method, 200, time.perf_counter() - started)
                return
            await self._respond(
                send, INFER_ROUTE, method, status, body, content_type, header_length, started, retry
            )
            return
        route = ["other"]  # set by the dispatcher as soon as the path matches a route
        content_type, header_length, retry = JSON, None, None
        try:
            status, body, content_type, header_length = await self._dispatch(scope, method, receive, route)
        except MlopsError as e:
            status, body = e.http_status, protocol.encode({"error": str(e)})
            retry = getattr(e, "retry_after_s", None)
        except Exception as e:  # noqa: BLE001 - one bad request must not take the worker down
            log.exception("%s %s failed", method, scope["path"])
            status, body = 500, protocol.encode({"error": f"internal error: {type(e).__name__}"})
        await self._respond(send, route[0], method, status, body, content_type, header_length, started, retry)

    async def _respond(
        self,
        send,
        route: str,
        method: str,
        status: int,
        body: bytes,
        ctype: bytes,
        header_length,
        started,
        retry_after_s: int | None = None,
    ) -> None:
        headers = [(b"content-type", ctype), (b"content-length", str(len(body)).encode())]
        if header_length is not None:
            headers.append((b"inference-header-content-length", str(header_length).encode()))
        if retry_after_s is not None:  # a full batch queue (503): when to try again
            headers.append((b"retry-after", b"%d" % retry_after_s))
        await send({"type": "http.response.start", "status": status, "headers": headers})
        await send({"type": "http.response.body", "body": body})
        self.metrics.observe(route, method, status, time.perf_counter() - started)

    async def _dispatch(
        self, scope, method: str, receive, route: list[str]
    ) -> tuple[int, bytes, bytes, int | None]:
        parts = scope["path"].strip("/").split("/")
        if parts[0] == "v2":
            if len(parts) >= 3 and parts[1] == "models":
                return await self._model_route(parts, scope, method, receive, route)
            if parts[1:] == ["health", "live"]:
                route[0] = "/v2/health/live"
                self._allow(method, "GET")
                return 200, b'{"live":true}', JSON, None
            if parts[1:] == ["health", "ready"]:
                route[0] = "/v2/health/ready"
                self._allow(method, "GET")
                self._require_ready()
                return 200, b'{"ready":true}', JSON, None
            if len(parts) == 1:
                route[0] = "/v2"
                self._allow(method, "GET")
                server = {"name": "mlops", "version": __version__, "extensions": ["binary_tensor_data"]}
                return 200, protocol.encode(server), JSON, None
        elif parts == ["metrics"]:
            route[0] = "/metrics"
            self._allow(method, "GET")
            body, ctype = self.metrics.exposition()
            return 200, body, ctype.encode(), None
        elif parts == ["openapi.json"]:
            route[0] = "/openapi.json"
            self._allow(method, "GET")
            return 200, self.openapi, JSON, None
        raise HttpError(404, f"no route for {scope['path']!r} (see /openapi.json)")

    async def _model_route(self, parts: list[str], scope, method: str, receive, route: list[str]):
        name, rest = parts[2], parts[3:]
        versioned = len(rest) >= 2 and rest[0] == "versions"
        if versioned:
            version, rest = rest[1], rest[2:]
        prefix = "/v2/models/{name}" + ("/versions/{version}" if versioned else "")
        if rest not in ([], ["ready"], ["infer"]):
            raise HttpError(404, f"no route for {scope['path']!r} (see /openapi.json)")
        route[0] = prefix + ("/" + rest[0] if rest else "")
        if name != self.name:
            raise HttpError(404, f"unknown model {name!r} (this server serves {self.name!r})")
        if versioned and version != self.version:
            raise HttpError(404, f"unknown version {version!r} of model {name!r} (serving {self.version!r})")
        if rest == ["infer"]:
            self._allow(method, "POST")
            body, header_length = await self._infer(scope, receive)
            return 200, body, JSON if header_length is None else OCTETS, header_length
        self._allow(method, "GET")
        self._require_ready()
        if rest == ["ready"]:
            return 200, protocol.encode({"name": self.name, "ready": True}), JSON, None
        return 200, self.metadata, JSON, None

    @staticmethod
    def _allow(method: str, allowed: str) -> None:
        if method != allowed and not (allowed == "GET" and method == "HEAD"):
            raise HttpError(405, f"method {method} not allowed here (use {allowed})")

    def _require_ready(self) -> None:
        if not self.ready:
            raise ModelNotReady(f"model {self.name!r} not ready: {self.error or 'still loading'}")

    async def _read_body(self, scope, receive) -> tuple[bytes, bytes | None]:
        """The request body (decompressed) and its Inference-Header-Content-Length header, if any."""
        limit = self.params.max_body_bytes
        ctype = encoding = b""
        header_length = None
        for key, value in scope["headers"]:
            if key == b"content-length":
                if not value.isdigit() or len(value) > 18 or int(value) > limit:
                    raise HttpError(413, f"request body over the {limit}-byte limit (serve.max_body_bytes)")
            elif key == b"content-type":
                ctype = value
            elif key == binary.HEADER:
                header_length = value
            elif key == b"content-encoding":
                encoding = value.strip().lower()
        if ctype.split(b";")[0].strip().lower() not in CONTENT_TYPES:
            raise HttpError(
                415,
                "content-type must be application/json, application/octet-stream (binary tensor data "
                f"extension), application/x-www-form-urlencoded (curl -d) or absent, got {ctype.decode('latin-1')!r}",
            )
        if encoding not in (b"", b"identity", b"gzip", b"deflate"):
            raise HttpError(
                415, f"content-encoding {encoding.decode('latin-1')!r} not supported (gzip, deflate)"
            )
        message = await receive()
        if message["type"] == "http.disconnect":
            raise HttpError(400, "client disconnected before sending the whole body")
        body = message.get("body", b"")
        if len(body) > limit:
            raise HttpError(413, f"request body over the {limit}-byte limit (serve.max_body_bytes)")
        if message.get("more_body", False):
            chunks, size, more = [body], len(body), True
            while more:
                message = await receive()
                if message["type"] == "http.disconnect":
                    raise HttpError(400, "client disconnected before sending the whole body")
                chunk = message.get("body", b"")
                chunks.append(chunk)
                size += len(chunk)
                more = message.get("more_body", False)
                if size > limit:
                    raise HttpError(413, f"request body over the {limit}-byte limit (serve.max_body_bytes)")
            body = b"".join(chunks)
        if encoding in (b"gzip", b"deflate"):
            body = _decompress(body, encoding.decode(), limit)
        return body, header_length

    async def _infer(self, scope, receive) -> tuple[bytes, int | None]:
        body, header_length = await self._read_body(scope, receive)
        self._require_ready()
        # the common request in one typed pass (mlops.serve.fastpath); anything else, every invalid
        # request included, takes the reference path, which owns the validation rules and messages
        fast = self.fast.decode(body) if header_length is None else None
        if fast is None:
            request = binary.decode(body, header_length)
            columns, x = self.encoder.encode(request)
        else:
            request, _, x = fast
            columns = None
        if request.parameters or request.outputs:
            wanted_binary = binary.outputs(request, self.output_names)
        else:
            wanted_binary = frozenset()
        data, logged, labels = self.layout(await self.batcher.submit(x))
        if self.regression:
            self.metrics.predicted_values(self.name, self.version, data[0])
        else:
            self.metrics.predicted(self.name, self.version, labels)
        if self.predlog.enabled:
            raw = fast_columns(request) if columns is None else columns
            self.predlog.submit(request.id, raw, *logged)
        if request.outputs is None and not wanted_binary:
            return self.template.encode(request.id, *data), None
        return protocol.response(
            self.name,
            self.version,
            request.id,
            request.outputs,
            *data,
            binary=wanted_binary,
            spec=self.output_spec,
        )


def _decompress(body: bytes, encoding: str, limit: int) -> bytes:
    """Inflate a gzip or deflate (zlib) body, refusing more than `limit` bytes of output (413)."""
    inflater = zlib.decompressobj(47)  # 32 + 15: a zlib or a gzip header, detected
    try:
        out = inflater.decompress(body, limit + 1)
    except zlib.error as e:
        raise DataError(f"content-encoding {encoding}: the body does not decompress ({e})") from e
    if len(out) > limit:
        raise HttpError(
            413, f"request body over the {limit}-byte limit (serve.max_body_bytes) once decompressed"
        )
    if not inflater.eof or inflater.unused_data:
        raise DataError(
            f"content-encoding {encoding}: the compressed body is truncated or has trailing bytes"
        )
    return out
