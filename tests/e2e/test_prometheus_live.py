"""Live monitoring check: a real Prometheus (Debian package) on 127.0.0.1 scrapes a real `mlops serve` with
2 workers and a real Pushgateway, evaluates the canonical rules (monitoring/rules/, every second), while
the test sends inference traffic (single rows, 64-row batches, 400s and 404s) with the prediction log on
and runs the real `mlops drift --push-url` over the logged predictions. Then every recording rule, every
Grafana dashboard query and every dashboard variable must return data carrying the labels the dashboard
shows, and every rule must evaluate without error.

The Prometheus config is monitoring/prometheus/prometheus.yml with the test's targets and 1 s intervals;
its scrape job adds namespace/service target labels as the Prometheus operator's ServiceMonitor does, so
the rules see the label set of a cluster scrape.
"""

from __future__ import annotations

import math
import os
import shutil
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from monitoring.daemons import Daemon, prometheus, pushgateway
from serve.serve_helpers import ModelSpec, Server, infer_body, split_rows, start_server

from monitoring import promql

from conftest import FIXTURE_PARAMS, Workspace

pytestmark = pytest.mark.e2e

NAMESPACE = "mlops-e2e"
SERVICE = "model-server"
JOB = "model-server"
SERVER_LABELS = {"namespace": NAMESPACE, "service": SERVICE, "job": JOB}


@dataclass
class Stack:
    server: Server
    prometheus: Daemon
    spec: ModelSpec
    sent: dict[int, int]  # status -> responses seen by the traffic thread
    drift_exit: int

    def query(self, expr: str) -> list[dict[str, Any]]:
        r = httpx.get(f"{self.prometheus.url}/api/v1/query", params={"query": expr}, timeout=10)
        body = r.json()
        assert r.status_code == 200 and body["status"] == "success", f"{expr}: {r.text}"
        return body["data"]["result"]


class Traffic:
    """Inference requests in a background thread until stopped: single rows and 64-row batches of real
    test-split rows, every 7th request malformed (400), every 11th to an unknown model (404)."""

    def __init__(self, server: Server, spec: ModelSpec, rows: list[dict[str, Any]]):
        self.server, self.spec, self.rows = server, spec, rows
        self.sent: dict[int, int] = {}
        self.rows_ok = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _bad_body(self, rows: list[dict[str, Any]]) -> dict[str, Any]:
        body = infer_body(self.spec, rows)
        numeric = next(t for t in body["inputs"] if t["datatype"] in ("FP64", "INT64"))
        numeric["data"] = ["not a number"] * len(rows)
        return body

    def _run(self) -> None:
        i = 0
        with httpx.Client(timeout=10) as client:
            while not self._stop.is_set():
                size = 64 if i % 2 else 1
                start = (i * 64) % (len(self.rows) - 64)
                rows = self.rows[start : start + size]
                url = self.server.infer_url()
                if i % 11 == 10:
                    url, body = self.server.infer_url("no-such-model"), infer_body(self.spec, rows)
                elif i % 7 == 6:
                    body = self._bad_body(rows)
                else:
                    body = infer_body(self.spec, rows)
                status = client.post(url, json=body).status_code
                self.sent[status] = self.sent.get(status, 0) + 1
                if status == 200:
                    self.rows_ok += size
                i += 1
                time.sleep(0.01)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(15)


def logged_rows(log_dir: Path) -> int:
    return sum(len(p.read_text().splitlines()) for p in log_dir.glob("predictions-*.jsonl"))


def prometheus_config(root: Path, server: Server, gateway: Daemon) -> Path:
    """monitoring/prometheus/prometheus.yml (the example config, the canonical rules in it) with this
    test's targets, 1 s scrape and evaluation intervals, and no Alertmanager."""
    config = yaml.safe_load(promql.PROMETHEUS.read_text())
    config["global"].update(scrape_interval="1s", scrape_timeout="1s", evaluation_interval="1s")
    config["rule_files"] = [os.path.normpath(promql.PROMETHEUS.parent / f) for f in config["rule_files"]]
    assert config["rule_files"] == [str(promql.RULES_LINK)]
    del config["alerting"]
    targets = {JOB: f"127.0.0.1:{server.port}", "pushgateway": f"127.0.0.1:{gateway.port}"}
    for job in config["scrape_configs"]:
        (static,) = job["static_configs"]
        static["targets"] = [targets[job["job_name"]]]
        if job["job_name"] == JOB:
            static["labels"] = {"namespace": NAMESPACE, "service": SERVICE}
    path = root / "prometheus.yml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def stage_reference(ws: Workspace, model_dir: Path, root: Path) -> Path:
    """reference.parquet as `mlops register` stages it next to model.json (training rows' raw features,
    label and the model's probability): what the drift CronJob reads in the cluster."""
    from mlops import model as model_lib
    from mlops import registry

    frame = registry.reference_sample(
        model_lib.load(model_dir), ws.raw, ws.processed / "train.parquet", rows=5000, seed=0
    )
    path = root / "reference.parquet"
    frame.to_parquet(path, index=False)
    return path


def run_drift(root: Path, reference: Path, log_dir: Path, gateway: Daemon) -> int:
    """The real drift job over the logged predictions, pushing to the Pushgateway; its exit code."""
    cmd = [
        sys.executable,
        "-m",
        "mlops.cli",
        "--params",
        str(FIXTURE_PARAMS),
        "drift",
        "--log-dir",
        str(log_dir),
        "--reference",
        str(reference),
        "--out-dir",
        str(root / "drift"),
        "--push-url",
        gateway.url,
    ]
    result = subprocess.run(cmd, cwd=root, capture_output=True, text=True, timeout=300)
    assert result.returncode in (0, 7), f"mlops drift exited {result.returncode}: {result.stderr[-3000:]}"
    return result.returncode


def wait_for(stack: Stack, exprs: list[str], timeout: float) -> dict[str, list[dict[str, Any]]]:
    """Poll until every expression returns at least one finite sample (or the timeout); return the last
    results."""
    deadline = time.monotonic() + timeout
    while True:
        results = {e: stack.query(e) for e in exprs}
        missing = [e for e, r in results.items() if not any(math.isfinite(float(s["value"][1])) for s in r)]
        if not missing or time.monotonic() > deadline:
            return results
        time.sleep(1)


@pytest.fixture(scope="module")
def stack(pipeline: Workspace, tmp_path_factory) -> Iterator[Stack]:
    root = tmp_path_factory.mktemp("prometheus-live")
    model_dir = shutil.copytree(pipeline.models, root / "models")
    spec = ModelSpec.from_dir(model_dir)
    rows = split_rows(pipeline.raw, pipeline.processed / "test.parquet", spec)
    log_dir = root / "predictions"
    reference = stage_reference(pipeline, model_dir, root)
    server = start_server(
        root / "serve",
        model_dir,
        workers=2,
        prediction_log={"rate": 1.0, "dir": str(log_dir), "flush_interval_s": 0.2},
    )
    traffic = Traffic(server, spec, rows)
    try:
        with pushgateway(root) as gateway:
            config = prometheus_config(root, server, gateway)
            with prometheus(config, root) as prom:
                traffic.start()
                # enough logged rows for a drift verdict (params drift.min_rows), then the real drift job
                deadline = time.monotonic() + 120
                while logged_rows(log_dir) < 1200:
                    assert time.monotonic() < deadline, f"only {logged_rows(log_dir)} rows logged"
                    time.sleep(0.5)
                drift_exit = run_drift(root, reference, log_dir, gateway)
                yield Stack(server, prom, spec, traffic.sent, drift_exit)
    finally:
        traffic.stop()
        assert server.stop() == 0, server.log.read_text()[-3000:]


def test_every_rule_evaluates_without_error(stack):
    body = httpx.get(f"{stack.prometheus.url}/api/v1/rules", timeout=10).json()
    groups = body["data"]["groups"]
    assert {g["name"] for g in groups} == {g["name"] for g in promql.load_rules()["groups"]}
    wait_for(stack, ["mlops:serve_infer_requests:rate5m"], timeout=60)
    time.sleep(2)  # every group evaluated at least once more since data arrived
    groups = httpx.get(f"{stack.prometheus.url}/api/v1/rules", timeout=10).json()["data"]["groups"]
    bad = [(r["name"], r.get("lastError")) for g in groups for r in g["rules"] if r["health"] != "ok"]
    assert not bad, bad
    assert sum(len(g["rules"]) for g in groups) == len(promql.all_rules())


def test_recording_rules_return_data_with_scrape_labels(stack):
    names = sorted(promql.recorded_names())
    results = wait_for(stack, names, timeout=90)
    empty = [n for n, r in results.items() if not r]
    assert not empty, f"recording rules without data: {empty}"
    for name, result in results.items():
        for sample in result:
            labels = sample["metric"]
            if name.startswith("mlops:serve_"):
                assert {k: labels.get(k) for k in SERVER_LABELS} == SERVER_LABELS, (name, labels)
            else:
                assert labels.get("job") == "mlops_drift" and labels.get("model") == stack.spec.name, labels
    # the traffic's statuses as the server counted them, by route template
    statuses = {(s["metric"]["route"], s["metric"]["status"]) for s in results["mlops:serve_requests:rate5m"]}
    assert {("/v2/models/{name}/infer", "200"), ("/v2/models/{name}/infer", "400")} <= statuses
    assert stack.sent.get(400) and stack.sent.get(404) and stack.sent.get(200), stack.sent
    (client_errors,) = results["mlops:serve_infer_client_errors:ratio_rate5m"]
    assert 0 < float(client_errors["value"][1]) < 1
    (server_errors,) = results["mlops:serve_request_errors:ratio_rate5m"]
    assert float(server_errors["value"][1]) == 0
    shares = results["mlops:serve_predictions:share_5m"]
    assert {s["metric"]["class"] for s in shares} <= set(stack.spec.classes)
    assert math.isclose(sum(float(s["value"][1]) for s in shares), 1.0, rel_tol=1e-6)
    (batch,) = results["mlops:serve_batch_rows:mean_5m"]
    assert 1 <= float(batch["value"][1]) <= 256


REGRESSION_ONLY = "mlops_serve_predicted_value"
"""The regression model's predicted-value histogram: the stack serves the (binary) demo, so the panels
built on it (titled "(regression...") have no series here; tests/serve/test_tasks.py scrapes it."""


def test_every_dashboard_query_returns_data_with_its_legend_labels(stack):
    queries = [q for q in promql.dashboard_queries() if REGRESSION_ONLY not in q.expr]
    regression = [q for q in promql.dashboard_queries() if REGRESSION_ONLY in q.expr]
    assert regression and all("(regression" in q.panel for q in regression), [q.panel for q in regression]
    results = wait_for(stack, [q.expr for q in queries], timeout=90)
    problems = []
    for q in queries:
        result = results[q.expr]
        if not any(math.isfinite(float(s["value"][1])) for s in result):
            problems.append(f"{q.name}: no finite sample ({result})")
            continue
        for sample in result:
            missing = q.legend_labels - set(sample["metric"])
            if missing:
                problems.append(f"{q.name}: series {sample['metric']} lacks legend labels {missing}")
    assert not problems, "\n".join(problems)
    # drift panels show the drift job's real result for the served model
    drift = {q.panel: results[q.expr] for q in queries}
    assert {s["metric"]["model"] for s in drift["Dataset drift detected"]} == {stack.spec.name}
    (detected,) = drift["Dataset drift detected"]
    assert float(detected["value"][1]) == (1.0 if stack.drift_exit == 7 else 0.0)
    features = {s["metric"]["feature"] for s in drift["Drift score per feature"]}
    assert features and features <= set(stack.spec.names)


def test_dashboard_variables_list_the_scraped_values(stack):
    expected = {"namespace": [NAMESPACE], "job": [JOB], "model": [stack.spec.name]}
    for name, selector, label in promql.variable_queries():
        r = httpx.get(
            f"{stack.prometheus.url}/api/v1/label/{label}/values", params={"match[]": selector}, timeout=10
        ).json()
        assert r["status"] == "success" and r["data"] == expected[name], (name, r)
