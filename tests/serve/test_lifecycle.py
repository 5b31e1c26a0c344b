"""Lifecycle and internals: ready only after the checksum is verified, micro-batching, graceful SIGTERM
with in-flight requests, the grace period bound, and a prediction log that drops instead of blocking."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import signal
import socket
import threading
import time
from concurrent.futures import ThreadPoolExecutor

import httpx
import msgspec
import numpy as np
import pytest

from mlops.config import load_params
from mlops.params import serve as serve_params
from mlops.params.serve import PredictionLogParams
from mlops.serve.app import App, Settings
from mlops.serve.batching import Batcher, Overloaded
from mlops.serve.predlog import PredictionLog

from .serve_helpers import FIXTURE_PARAMS, infer_body, start_server


def _asgi_get(loop, app: App, path: str) -> tuple[int, dict]:
    """Call the ASGI app in-process for one GET request."""
    sent: list[dict] = []

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "method": "GET", "path": path, "headers": []}
    loop.run_until_complete(app(scope, receive, send))
    return sent[0]["status"], json.loads(sent[1]["body"])


@pytest.mark.parametrize(("backend", "served"), [("onnx", "model.onnx"), ("torch", "model.safetensors")])
def test_not_ready_until_checksum_verified(model_dir, tmp_path, backend, served):
    """Each worker verifies the file its backend serves (the supervisor checked the weights before)."""
    altered = tmp_path / "models"
    shutil.copytree(model_dir, altered)
    (altered / served).write_bytes(b"\x00" * 64)
    params = serve_params.replace(load_params(FIXTURE_PARAMS).serve, backend=backend)
    app = App(Settings(str(altered), "v-test", serve_params.to_builtins(params)))
    loop = asyncio.new_event_loop()
    asyncio.set_event_loop(loop)
    try:
        queue: asyncio.Queue = asyncio.Queue()
        out: list[dict] = []

        async def send(m):
            out.append(m)

        lifespan = loop.create_task(app({"type": "lifespan"}, queue.get, send))
        loop.run_until_complete(queue.put({"type": "lifespan.startup"}))
        loop.run_until_complete(asyncio.sleep(0.05))
        assert _asgi_get(loop, app, "/v2/health/live") == (200, {"live": True})
        deadline = time.monotonic() + 60
        while app.error is None and time.monotonic() < deadline:
            loop.run_until_complete(asyncio.sleep(0.05))
        status, body = _asgi_get(loop, app, "/v2/health/ready")
        assert status == 503 and "sha256" in body["error"]
        assert _asgi_get(loop, app, "/v2/models/churn-mlp/ready")[0] == 503
        loop.run_until_complete(queue.put({"type": "lifespan.shutdown"}))
        loop.run_until_complete(lifespan)
    finally:
        loop.close()
        asyncio.set_event_loop(None)


def test_concurrent_requests_share_one_forward_pass():
    calls: list[int] = []

    def forward(x: np.ndarray) -> np.ndarray:
        calls.append(len(x))
        return x[:, 0].astype(np.float64)

    async def main():
        batcher = Batcher(forward, max_batch_size=64, max_wait_ms=20, queue_size=100)
        batcher.start()
        results = await asyncio.gather(*(batcher.submit(np.full((2, 3), i, np.float32)) for i in range(10)))
        await batcher.stop()
        return results

    results = asyncio.run(main())
    assert calls == [20]
    assert [r.tolist() for r in results] == [[float(i), float(i)] for i in range(10)]


def test_batches_respect_max_size_and_queue_bound():
    calls: list[int] = []

    async def main():
        batcher = Batcher(
            lambda x: (calls.append(len(x)), x[:, 0].astype(np.float64))[1],
            max_batch_size=4,
            max_wait_ms=0,
            queue_size=6,
        )
        batcher.start()
        futs = [asyncio.ensure_future(batcher.submit(np.zeros((1, 2), np.float32))) for _ in range(7)]
        done = await asyncio.gather(*futs, return_exceptions=True)
        await batcher.stop()
        return done

    done = asyncio.run(main())
    assert sum(isinstance(d, Overloaded) for d in done) == 1
    assert max(calls) <= 4 and sum(calls) == 6


def _predlog(tmp_path, queue_size: int, counts: dict) -> PredictionLog:
    params = PredictionLogParams(
        rate=1.0,
        dir=str(tmp_path / "log"),
        max_file_bytes=1 << 20,
        flush_interval_s=0.05,
        queue_size=queue_size,
    )
    return PredictionLog(
        params,
        "m",
        "v",
        *(lambda n, k=k: counts.__setitem__(k, counts[k] + n) for k in ("written", "dropped", "failed")),
    )


def test_slow_prediction_sink_drops_and_counts_without_blocking(tmp_path):
    counts = {"written": 0, "dropped": 0, "failed": 0}
    plog = _predlog(tmp_path, queue_size=3, counts=counts)
    gate = threading.Event()
    plog.write = lambda path, data: gate.wait(60)  # a sink that hangs for a minute
    plog.start()
    started = time.perf_counter()
    for i in range(200):
        plog.submit(str(i), {"a": [1]}, [0.5], ["Yes"])
    elapsed = time.perf_counter() - started
    # a submit that waited for the sink would take a minute; 200 non-blocking ones take milliseconds
    assert elapsed < 10, f"submit blocked for {elapsed:.3f}s"
    assert counts["dropped"] >= 190
    gate.set()
    plog.stop(5)


def test_failing_prediction_sink_is_counted_not_raised(tmp_path):
    counts = {"written": 0, "dropped": 0, "failed": 0}
    plog = _predlog(tmp_path, queue_size=100, counts=counts)

    def broken(path, data):
        raise OSError("disk full")

    plog.write = broken
    plog.start()
    plog.submit("x", {"a": [1, 2]}, [0.1, 0.9], ["No", "Yes"])
    plog.stop(5)
    assert counts == {"written": 0, "dropped": 0, "failed": 2}


def test_an_unusable_log_location_counts_failures_and_recovers_once_it_exists(tmp_path):
    """A mis-mounted volume (a file where the directory should be) never raises: records fail and are
    counted; once the location can be created, the next flush writes."""
    counts = {"written": 0, "dropped": 0, "failed": 0}
    plog = _predlog(tmp_path, queue_size=100, counts=counts)
    blocker = tmp_path / "log"
    blocker.write_text("a file in the way")
    plog.start()
    plog.submit("x", {"a": [1]}, [0.1], ["No"])
    deadline = time.monotonic() + 10
    while counts["failed"] < 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert counts == {"written": 0, "dropped": 0, "failed": 1}
    blocker.unlink()
    plog.submit("y", {"a": [2]}, [0.9], ["Yes"])
    plog.stop(5)
    assert counts == {"written": 1, "dropped": 0, "failed": 1}
    assert len(list((tmp_path / "log").glob("*.jsonl"))) == 1


@pytest.mark.parametrize("url", ["memory", "file"])
def test_prediction_log_writes_complete_files_to_an_fsspec_url(tmp_path, url):
    import fsspec

    counts = {"written": 0, "dropped": 0, "failed": 0}
    plog = _predlog(tmp_path, queue_size=100, counts=counts)
    target = f"memory://predlog-{tmp_path.name}" if url == "memory" else (tmp_path / "log").as_uri()
    plog.params = msgspec.structs.replace(plog.params, dir=target)
    plog.start()
    plog.submit("r1", {"size": [1, 2], "color": ["red", "blue"]}, [0.1, 0.9], ["No", "Yes"])
    plog.submit("r2", {"size": [3], "color": ["green"]}, [0.7], ["Yes"])
    plog.stop(5)
    fs, root = fsspec.core.url_to_fs(target)
    names = sorted(fs.ls(root, detail=False))
    assert names and all(n.endswith(".jsonl") for n in names), names  # no temp file left behind
    records = [json.loads(line) for n in names for line in fs.cat_file(n).decode().splitlines()]
    assert counts == {"written": 3, "dropped": 0, "failed": 0}
    assert [(r["request_id"], r["inputs"], r["label"]) for r in records] == [
        ("r1", {"size": 1, "color": "red"}, "No"),
        ("r1", {"size": 2, "color": "blue"}, "Yes"),
        ("r2", {"size": 3, "color": "green"}, "Yes"),
    ]
    assert {(r["model"], r["model_version"]) for r in records} == {("m", "v")}
    if url == "memory":
        fs.rm(root, recursive=True)


@pytest.mark.slow
def test_json_logs_cover_supervisor_and_every_worker(model_dir, spec, rows, tmp_path):
    def records() -> list[dict]:
        complete = srv.log.read_text().split("\n")[:-1]  # a line still being written is not read
        return [json.loads(line) for line in complete if line.strip()]  # every line is one JSON object

    def ready() -> set[int]:
        return {r["pid"] for r in records() if r["logger"] == "mlops.serve.app" and "ready" in r["msg"]}

    def loaded() -> set[int]:
        return {r["pid"] for r in records() if r["logger"] == "mlops.serve.app" and "loaded" in r["msg"]}

    srv = start_server(tmp_path, model_dir, global_args=("--log-json",), workers=2)
    try:
        assert httpx.post(srv.infer_url(), json=infer_body(spec, rows[:1])).status_code == 200
        deadline = time.monotonic() + 30  # readiness may have been answered by one worker only
        while len(ready()) < 2 and time.monotonic() < deadline:
            time.sleep(0.1)
    finally:
        assert srv.stop() == 0
    assert all({"ts", "level", "pid", "logger", "msg"} <= r.keys() for r in records())
    assert len(ready()) == 2, records()  # each worker says when it is ready
    assert srv.proc.pid not in ready()
    # the ONNX model is loaded (and verified) once, by the supervisor, before the workers are forked
    assert loaded() == {srv.proc.pid}, records()


@pytest.mark.slow
def test_sigterm_completes_in_flight_requests_and_refuses_new_ones(model_dir, spec, rows, tmp_path):
    # every request waits up to 4 s in the batch queue, so all of them are in flight when SIGTERM lands,
    # and the server is still draining them when new connections are tried
    srv = start_server(
        tmp_path, model_dir, workers=2, max_wait_ms=4000.0, max_batch_size=100000, grace_period_s=10.0
    )
    body = json.dumps(infer_body(spec, rows[:1]))

    def one(_):
        with socket.create_connection(("127.0.0.1", srv.port)) as s:  # connected before SIGTERM
            time.sleep(0.3)
            req = (
                f"POST /v2/models/{spec.name}/infer HTTP/1.1\r\nhost: x\r\n"
                f"content-type: application/json\r\ncontent-length: {len(body)}\r\n"
                f"connection: close\r\n\r\n{body}"
            )
            s.sendall(req.encode())
            data = b""
            while chunk := s.recv(65536):
                data += chunk
            return data

    def draining() -> bool:
        """The supervisor is alive and no in-flight request has been answered yet."""
        return srv.proc.poll() is None and not any(f.done() for f in futures)

    with ThreadPoolExecutor(24) as pool:
        futures = [pool.submit(one, i) for i in range(24)]
        time.sleep(0.6)  # connections open, requests sent and waiting in the batcher
        sent = time.monotonic()
        os.kill(srv.proc.pid, signal.SIGTERM)
        # the workers close their listening sockets first thing; on a loaded machine that may take a
        # moment, so connect until refused, for as long as the in-flight requests hold the server
        refused = accepted = 0
        refused_while_draining = False
        while draining() and time.monotonic() - sent < 3.0:
            try:
                socket.create_connection(("127.0.0.1", srv.port), timeout=1).close()
                accepted += 1
            except ConnectionRefusedError:
                refused_while_draining = draining()
                refused += 1
                break
            time.sleep(0.05)
        answers = [f.result(timeout=30) for f in futures]
    assert refused, f"{accepted} new connections accepted while draining, none refused"
    assert refused_while_draining, "the in-flight requests were answered before the refusal was seen"
    assert all(a.startswith(b"HTTP/1.1 200") for a in answers), [a[:40] for a in answers]
    assert srv.proc.wait(30) == 0
    assert time.monotonic() - sent < 10


@pytest.mark.slow
def test_exit_within_grace_period_even_with_stuck_requests(model_dir, spec, rows, tmp_path):
    srv = start_server(
        tmp_path, model_dir, workers=1, max_wait_ms=60000.0, max_batch_size=100000, grace_period_s=1.0
    )
    pool = ThreadPoolExecutor(2)
    body = infer_body(spec, rows[:1])
    stuck = [pool.submit(httpx.post, srv.infer_url(), json=body, timeout=30) for _ in range(2)]
    time.sleep(0.5)
    sent = time.monotonic()
    os.kill(srv.proc.pid, signal.SIGTERM)
    assert srv.proc.wait(15) == 0
    assert time.monotonic() - sent < 4.5
    for f in stuck:
        try:
            status = f.result(timeout=10).status_code
        except httpx.HTTPError:
            continue  # a request cut off by the grace period: the connection closes
        assert status != 200
    pool.shutdown()
