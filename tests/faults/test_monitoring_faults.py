"""Monitoring faults: the Pushgateway (the Debian `prometheus-pushgateway`) crashes between two drift
runs, and Alertmanager storms the retrain trigger (`mlops trigger-retrain --listen`) with 100 concurrent
notifications, before and after the receiver is killed with SIGKILL. The CI systems the trigger calls
cannot run here: their API is the labelled test double of tests/monitor/ci_double.py (docs/faults.md)."""

from __future__ import annotations

import datetime as dt
import json
import shutil
import signal
import subprocess
import threading
import time
from collections import Counter
from pathlib import Path

import pytest
from monitor.ci_double import running
from monitor.drift_helpers import (
    log_records,
    parse_metrics,
    scrape,
    strict_json,
    synthetic_rows,
    write_log,
    write_reference,
)
from monitor.test_trigger import ci_env, cli_params, http, notification, receiver_argv

from mlops import cli

from .injectors import mlops_env, stop_group
from conftest import FIXTURE_PARAMS, free_port

pytestmark = pytest.mark.slow
NOW = dt.datetime.now(dt.UTC)


def pushgateway(root: Path, port: int) -> subprocess.Popen:
    """Start the real Pushgateway on 127.0.0.1:port (its own process group); wait until ready."""
    binary = shutil.which("prometheus-pushgateway")
    assert binary, "prometheus-pushgateway not installed: make system-packages"
    with open(root / f"pushgateway-{time.monotonic_ns()}.log", "wb") as log:
        proc = subprocess.Popen(
            [binary, f"--web.listen-address=127.0.0.1:{port}"],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    deadline = time.monotonic() + 30
    while True:
        assert proc.poll() is None, "pushgateway exited"
        try:
            scrape(f"http://127.0.0.1:{port}")
            return proc
        except OSError:
            assert time.monotonic() < deadline, "pushgateway not ready in 30 s"
            time.sleep(0.1)


def window(root: Path, params, shifted: bool = False) -> Path:
    frame = synthetic_rows(params.schema_, 2000, seed=7)
    if shifted:
        frame["monthly_charges"] = frame["monthly_charges"] * 1.5
        frame.loc[frame.index % 2 == 0, "contract"] = "Two year"
    when = NOW - dt.timedelta(minutes=5)
    write_log(root / "predictions", log_records(frame, when), when)
    return root / "predictions"


def test_pushgateway_down_the_drift_report_is_still_written_and_the_exit_code_says_so(
    tmp_path: Path, params, capsys
):
    """The Pushgateway is SIGKILLed after a successful push: the next `mlops drift --push-url` still
    writes its report, summary and metrics file, and exits 1 naming the gateway (7 when drift is found,
    the message naming the failed push); lost: only that run's gauges at the gateway (the
    MlopsDriftJobStale alert fires after 26 h without a push). With the gateway back, the next run
    pushes (exit 0)."""
    reference = write_reference(tmp_path / "reference.parquet", params.schema_)
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    group = frozenset({("job", "mlops_drift"), ("model", "churn-mlp"), ("instance", "")})

    def drift(name: str, shifted: bool = False) -> tuple[int, Path, float]:
        out = tmp_path / name
        args = ["--params", str(FIXTURE_PARAMS), "drift", "--log-dir", str(window(out, params, shifted))]
        args += ["--reference", str(reference), "--out-dir", str(out / "drift")]
        args += ["--metrics-file", str(out / "drift.prom"), "--push-url", url]
        started = time.monotonic()
        return cli.main(args), out, time.monotonic() - started

    gateway = pushgateway(tmp_path, port)
    try:
        code, _, _ = drift("up")
        assert code == 0
        pushed = parse_metrics(scrape(url))[("mlops_drift_last_run_timestamp_seconds", group)]
    finally:
        stop_group(gateway, signal.SIGKILL)

    for name, shifted, expected in (("down", False, 1), ("down-drift", True, 7)):
        code, out, took = drift(name, shifted)
        assert code == expected, name
        last = capsys.readouterr().err.strip().splitlines()[-1]
        assert last.startswith("mlops drift: error: ") and f"pushgateway {url}: push of the drift" in last
        summary = strict_json(out / "drift/summary.json")
        assert summary["status"] == ("drift" if shifted else "no_drift"), summary["status"]
        assert (out / "drift/report.html").stat().st_size > 0
        assert "mlops_drift_detected" in (out / "drift.prom").read_text()
        assert took < 60

    gateway = pushgateway(tmp_path, port)  # the recovery: the gateway is back; the next run pushes
    try:
        code, _, _ = drift("back")
        assert code == 0
        assert parse_metrics(scrape(url))[("mlops_drift_last_run_timestamp_seconds", group)] > pushed
    finally:
        stop_group(gateway)


def storm(base: str, n: int = 100) -> tuple[Counter, list[dict]]:
    """`n` Alertmanager notifications POSTed at once (a barrier releases them together)."""
    body = json.dumps(notification()).encode()
    barrier = threading.Barrier(n)
    answers: list = [None] * n

    def post(i: int) -> None:
        barrier.wait()
        answers[i] = http(f"{base}/alertmanager", body)

    threads = [threading.Thread(target=post, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    statuses = Counter(a[0] for a in answers if a)
    return statuses, [a[1] for a in answers if a]


def start_receiver(params: Path, port: int, env: dict[str, str]) -> subprocess.Popen:
    proc = subprocess.Popen(
        receiver_argv(params, port),
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 60
    while True:
        try:
            if http(f"http://127.0.0.1:{port}/healthz") == (200, {"status": "ok"}):
                return proc
        except OSError:
            pass
        assert proc.poll() is None and time.monotonic() < deadline, "receiver did not start"
        time.sleep(0.2)


def test_a_webhook_storm_of_100_concurrent_alerts_starts_exactly_one_retrain(tmp_path: Path):
    """100 concurrent firing notifications: each is answered 200, exactly one says `triggered` and one
    retrain run starts in CI; the receiver is then killed with SIGKILL and restarted (a rescheduled
    pod), and a second storm of 100 starts none (the CI's run list holds the cooldown)."""
    params = cli_params(tmp_path, "github")
    port = free_port()
    with running() as ci:
        env = mlops_env(**ci_env(ci, "github"))
        receiver = start_receiver(params, port, env)
        try:
            started = time.monotonic()
            statuses, bodies = storm(f"http://127.0.0.1:{port}")
            took = time.monotonic() - started
            assert statuses == {200: 100}, statuses
            assert sum(b["triggered"] for b in bodies) == 1
            assert all("cooldown" in b["message"] for b in bodies if not b["triggered"])
            assert len(ci.started()) == 1
        finally:
            stop_group(receiver, signal.SIGKILL)
        assert receiver.returncode == -signal.SIGKILL

        receiver = start_receiver(params, port, env)
        try:
            statuses, bodies = storm(f"http://127.0.0.1:{port}")
            assert statuses == {200: 100}, statuses
            assert not any(b["triggered"] for b in bodies)
            assert len(ci.started()) == 1
        finally:
            stop_group(receiver)
    print(f"\nwebhook storm: 100 concurrent notifications answered in {took:.2f} s, 1 retrain started")
