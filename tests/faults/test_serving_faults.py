"""Serving faults against a real `mlops serve` (uvicorn workers on 127.0.0.1): overload far beyond the
batch queue, the model files corrupted under a running server, a worker killed with SIGKILL, and the
prediction log on a full disk. Each test states what happens, what is lost and how it recovers
(docs/faults.md)."""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import threading
import time
from collections import Counter
from pathlib import Path

import httpx
import pytest
from monitor.drift_helpers import parse_metrics
from serve.serve_helpers import ModelSpec, Server, infer_body, split_rows, start_server

from .injectors import children, rss_bytes, small_disk
from conftest import Workspace

pytestmark = pytest.mark.slow
MiB = 1024 * 1024


@pytest.fixture
def model_dir(pipeline: Workspace, tmp_path: Path) -> Path:
    """A private copy of the session's model (tests corrupt it)."""
    return Path(shutil.copytree(pipeline.models, tmp_path / "models"))


@pytest.fixture(scope="module")
def request_rows(pipeline: Workspace) -> list[dict]:
    spec = ModelSpec.from_dir(pipeline.models)
    return split_rows(pipeline.raw, pipeline.processed / "test.parquet", spec)[:64]


def requests_by_status(server: Server) -> dict[str, float]:
    """`mlops_serve_requests_total` of the infer route, by status, summed over workers."""
    out: Counter = Counter()
    for (name, labels), value in parse_metrics(server.metrics()).items():
        labels = dict(labels)
        if name == "mlops_serve_requests_total" and labels.get("route") == "/v2/models/{name}/infer":
            out[labels["status"]] += value
    return dict(out)


def test_overload_beyond_the_queue_is_503_with_retry_after_in_bounded_memory_and_recovers(
    model_dir: Path, request_rows: list[dict], tmp_path: Path
):
    """80 clients (10x `serve.queue_size: 8`) send without pause for 4 s to one worker whose batches
    wait 100 ms: the requests the queue cannot hold are answered at once with 503, `Retry-After: 1` and
    the reason; no other error; the server's resident memory stays within 64 MiB of its idle size; the
    first requests after the load stops are all answered 200."""
    server = start_server(tmp_path / "srv", model_dir, workers=1, queue_size=8, max_wait_ms=100.0)
    spec = ModelSpec.from_dir(model_dir)
    try:
        body = infer_body(spec, request_rows[:1])
        idle = rss_bytes(server.proc.pid)
        peak = [idle]
        stop = threading.Event()

        def sample() -> None:
            while not stop.is_set():
                peak[0] = max(peak[0], rss_bytes(server.proc.pid))
                time.sleep(0.05)

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        statuses: Counter = Counter()
        retry_after: Counter = Counter()
        errors: Counter = Counter()

        async def client(http: httpx.AsyncClient, until: float) -> None:
            while time.monotonic() < until:
                resp = await http.post(server.infer_url(), json=body)
                statuses[resp.status_code] += 1
                if resp.status_code == 503:
                    retry_after[resp.headers.get("retry-after")] += 1
                    errors[resp.json()["error"].split(" (")[0]] += 1

        async def load(seconds: float) -> None:
            limits = httpx.Limits(max_connections=80, max_keepalive_connections=80)
            async with httpx.AsyncClient(limits=limits, timeout=30) as http:
                until = time.monotonic() + seconds
                await asyncio.gather(*(client(http, until) for _ in range(80)))

        started = time.monotonic()
        asyncio.run(load(4.0))
        took = time.monotonic() - started
        stop.set()
        sampler.join()
        assert statuses[503] > 0 and statuses[200] > 0, statuses
        assert set(statuses) == {200, 503}, statuses
        assert dict(retry_after) == {"1": statuses[503]}, retry_after
        assert set(errors) == {"inference queue full"}, errors
        growth = peak[0] - idle
        assert growth < 64 * MiB, f"RSS grew {growth / MiB:.1f} MiB under overload"

        recovered = [httpx.post(server.infer_url(), json=body, timeout=10).status_code for _ in range(20)]
        assert recovered == [200] * 20
        counted = requests_by_status(server)
        assert counted.get("503", 0) == statuses[503] and counted["200"] >= statuses[200] + 20, counted
        print(
            f"\noverload: {sum(statuses.values())} requests in {took:.1f} s, {statuses[503]} x 503 "
            f"(Retry-After: 1), {statuses[200]} x 200; RSS idle {idle / MiB:.0f} MiB, peak "
            f"{peak[0] / MiB:.0f} MiB (+{growth / MiB:.1f})"
        )
    finally:
        assert server.stop() == 0, server.log.read_text()[-3000:]


def outputs(server: Server, name: str, body: dict) -> list:
    """The outputs of one inference (the URL from the model's name, not from model.json: tests alter it)."""
    resp = httpx.post(f"{server.url}/v2/models/{name}/infer", json=body, timeout=10)
    assert resp.status_code == 200, resp.text
    return resp.json()["outputs"]


def flip_last_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-1] ^= 0xFF
    path.write_bytes(bytes(data))


def test_model_files_corrupted_under_a_running_server_keep_serving_and_a_restart_refuses(
    model_dir: Path, request_rows: list[dict], tmp_path: Path
):
    """The model files change under a running server (a bad volume, a partial copy): it keeps serving
    the model it loaded and verified, byte for byte, and stays ready; a restart refuses the altered
    ONNX file (exit 6) and an unreadable model.json (exit 5), naming the file, before anything listens;
    with the files restored, the restart serves again."""
    spec = ModelSpec.from_dir(model_dir)
    body = infer_body(spec, request_rows[:16])
    good = {p.name: p.read_bytes() for p in model_dir.iterdir()}
    server = start_server(tmp_path / "srv", model_dir, workers=2)
    try:
        before = outputs(server, spec.name, body)
        flip_last_byte(model_dir / "model.onnx")
        flip_last_byte(model_dir / "model.safetensors")
        for _ in range(20):  # both workers, several times
            assert outputs(server, spec.name, body) == before
        assert httpx.get(f"{server.url}/v2/health/ready").status_code == 200
        assert httpx.get(f"{server.url}/v2/models/{spec.name}/ready").status_code == 200

        refused = start_server(tmp_path / "restart", model_dir, wait=False)
        assert refused.proc.wait(120) == 6, refused.log.read_text()[-3000:]
        last = refused.log.read_text().strip().splitlines()[-1]
        assert last.startswith(f"mlops serve: error: {model_dir / 'model.'}"), last
        assert "does not match model.json" in last

        (model_dir / "model.json").write_text((model_dir / "model.json").read_text()[:100])
        assert outputs(server, spec.name, body) == before
        refused = start_server(tmp_path / "restart2", model_dir, wait=False)
        assert refused.proc.wait(120) == 5, refused.log.read_text()[-3000:]
        last = refused.log.read_text().strip().splitlines()[-1]
        assert f"{model_dir / 'model.json'}: unreadable model metadata" in last, last

        for name, data in good.items():  # the recovery: the verified files again (fetch-model)
            (model_dir / name).write_bytes(data)
        restarted = start_server(tmp_path / "restart3", model_dir, workers=2)
        try:
            assert outputs(restarted, spec.name, body) == before
        finally:
            assert restarted.stop() == 0
    finally:
        assert server.stop() == 0, server.log.read_text()[-3000:]


def test_a_worker_killed_with_sigkill_stops_the_server_with_exit_1(
    model_dir: Path, request_rows: list[dict], tmp_path: Path
):
    """What the supervisor does today (mlops.serve.server): it does not restart a worker. A worker killed
    with SIGKILL makes it stop the other worker gracefully (SIGTERM: its in-flight requests finish) and
    exit 1 within the grace period, so the orchestrator restarts the container. Lost: the requests on
    the killed worker's connections (connection errors, never a 5xx) and its unflushed prediction-log
    records. A restart serves again."""
    spec = ModelSpec.from_dir(model_dir)
    body = infer_body(spec, request_rows[:1])
    server = start_server(tmp_path / "srv", model_dir, workers=2, grace_period_s=2.0)
    workers = children(server.proc.pid)
    assert len(workers) == 2, workers
    outcomes: Counter = Counter()
    stop = threading.Event()

    def client() -> None:
        with httpx.Client(timeout=10) as http:
            while not stop.is_set():
                try:
                    outcomes[http.post(server.infer_url(), json=body).status_code] += 1
                except httpx.TransportError as e:
                    outcomes[type(e).__name__] += 1
                    time.sleep(0.01)

    threads = [threading.Thread(target=client, daemon=True) for _ in range(8)]
    try:
        for t in threads:
            t.start()
        time.sleep(1.0)
        served_before = outcomes[200]
        assert served_before > 0, outcomes
        victim = workers[0]
        os.kill(victim, signal.SIGKILL)
        killed = time.monotonic()
        code = server.proc.wait(30)
        took = time.monotonic() - killed
    finally:
        stop.set()
        for t in threads:
            t.join(15)
        server.stop()
    log = server.log.read_text()
    assert code == 1, log[-3000:]
    assert took < 2.0 + 2.0 + 5.0, f"supervisor took {took:.1f} s to exit"
    assert f"worker {victim} exited with code -9; stopping the server" in log
    assert log.strip().splitlines()[-1] == (
        f"mlops serve: error: server worker {victim} exited unexpectedly with code -9"
    )
    http_errors = {k: v for k, v in outcomes.items() if isinstance(k, int) and k != 200}
    assert http_errors == {}, outcomes
    assert not any(p for p in workers if Path(f"/proc/{p}").exists()), "a worker outlived the supervisor"

    restarted = start_server(tmp_path / "again", model_dir, workers=2)  # what the orchestrator does
    try:
        assert outputs(restarted, spec.name, body)
    finally:
        assert restarted.stop() == 0
    print(f"\nworker SIGKILL: supervisor exit 1 after {took:.2f} s; client outcomes {dict(outcomes)}")


def test_a_full_prediction_log_disk_never_fails_a_request_and_is_counted(
    model_dir: Path, request_rows: list[dict], tmp_path: Path
):
    """The prediction log's volume is full: every request still succeeds at normal latency, the records
    that cannot be written are counted in /metrics (`outcome="failed"`, the MlopsPredictionLogLoss
    alert's input) and no temp file is left; with room again, the next flush writes. (Where no tmpfs
    can be mounted, the volume is unwritable instead: a file where its directory should be.)"""
    with small_disk(tmp_path / "logdisk", 64 * 1024) as disk:
        log_dir = disk.root / "predictions"
        if disk.kind == "tmpfs":
            disk.fill()
        else:
            log_dir.write_text("a file where the log directory should be")
        server = start_server(
            tmp_path / "srv",
            model_dir,
            workers=1,
            prediction_log={"rate": 1.0, "dir": str(log_dir), "flush_interval_s": 0.2},
        )
        spec = ModelSpec.from_dir(model_dir)
        try:
            full = timed_requests(server, spec, request_rows)
            deadline = time.monotonic() + 10
            while True:
                logged = predlog_counts(server)
                if logged.get("failed", 0) >= 1 or time.monotonic() > deadline:
                    break
                time.sleep(0.2)
            assert logged.get("failed", 0) >= 1 and logged.get("written", 0) == 0, logged
            # nothing under a log file's name, and no temp file left to hold the space
            assert not log_dir.is_dir() or sorted(os.listdir(log_dir)) == [], os.listdir(log_dir)
            if disk.kind == "tmpfs":  # the recovery: room on the volume; no restart needed
                disk.grow(16 * MiB)
            else:
                log_dir.unlink()
            roomy = timed_requests(server, spec, request_rows)
            deadline = time.monotonic() + 10
            while predlog_counts(server).get("written", 0) == 0 and time.monotonic() < deadline:
                time.sleep(0.2)
            assert predlog_counts(server).get("written", 0) >= 1
            print(
                f"\nprediction log on a full disk ({disk.kind}): 200/200 answered 200, p50/p99 {full[0]:.1f}/{full[1]:.1f} ms"
                f" (log writable: {roomy[0]:.1f}/{roomy[1]:.1f} ms)"
            )
        finally:
            assert server.stop() == 0, server.log.read_text()[-3000:]


def timed_requests(server: Server, spec: ModelSpec, rows: list[dict], n: int = 200) -> tuple[float, float]:
    """Send `n` one-row requests one after another, each answered 200; return (p50, p99) in ms."""
    latencies = []
    with httpx.Client(timeout=10) as http:
        for i in range(n):
            body = infer_body(spec, rows[i % 32 : i % 32 + 1])
            started = time.perf_counter()
            resp = http.post(server.infer_url(), json=body)
            latencies.append((time.perf_counter() - started) * 1e3)
            assert resp.status_code == 200, resp.text
    latencies.sort()
    return latencies[n // 2], latencies[int(n * 0.99)]


def predlog_counts(server: Server) -> dict[str, float]:
    out: Counter = Counter()
    for (name, labels), value in parse_metrics(server.metrics()).items():
        if name == "mlops_serve_prediction_log_records_total":
            out[dict(labels)["outcome"]] += value
    return dict(out)
