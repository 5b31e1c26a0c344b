"""A simulated production week: register -> fetch -> serve with the prediction log on -> normal traffic ->
`mlops drift` quiet -> shifted traffic -> `mlops drift` flags exactly the shifted features (exit 7),
pushes to a real Pushgateway, the drift alert rule fires in `promtool test rules` on the pushed values,
and the retrain trigger is called once per cooldown.

Real components: the demo pipeline, the MLflow registry (embedded SQLite store), `mlops fetch-model`,
`mlops serve` (2 workers), the Debian Pushgateway and promtool, `mlops drift` as a subprocess. The CI
API the trigger calls (GitHub workflow_dispatch) cannot run here: it is the labelled test double of
tests/monitor/ci_double.py.

Why the verdicts are robust, not lucky: each period replays every row of the test split exactly once
(1,427 rows; drift.min_rows is 1,000), so the windows' content is fixed, not sampled. Unshifted, the test
split differs from the training split (the reference) by the hash split's sampling alone: the largest
distance is ~0.05 (`female`, normed Wasserstein) against thresholds of 0.1. The shift is an order of
magnitude above them: monthly_charges x1.5 (normed Wasserstein ~1.0) and every second row's contract
set to "Two year" (Jensen-Shannon ~0.3), while every other column of the shifted window is the same
data as in the quiet window. 2 of 19 features drifted = 0.105 >= drift.share_threshold 0.1: exit 7.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from monitor.ci_double import running
from monitor.drift_helpers import parse_metrics, pushgateway_process, scrape, strict_json
from registry.conftest import copy_workspace, gate_args, register_args
from serve.serve_helpers import ModelSpec, infer_body, split_rows, start_server

from conftest import REPO, Workspace

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

RULES = REPO / "monitoring/rules/mlops.rules.yaml"
ALERT = "MlopsDataDrift"
TOKEN = "e2e-retrain-token"
SHIFTED = ["contract", "monthly_charges"]


def replay(url: str, spec: ModelSpec, rows: list[dict[str, Any]], batch: int = 16) -> None:
    """Send every row once, `batch` rows per OIP request; every request must succeed."""
    with httpx.Client(timeout=30) as client:
        for i in range(0, len(rows), batch):
            r = client.post(f"{url}/v2/models/{spec.name}/infer", json=infer_body(spec, rows[i : i + batch]))
            assert r.status_code == 200, r.text


def logged_rows(log_dir: Path) -> int:
    return sum(len(p.read_bytes().splitlines()) for p in log_dir.glob("predictions-*.jsonl"))


def wait_logged(log_dir: Path, expected: int, timeout: float = 60) -> None:
    """Wait until the server's writer threads flushed `expected` rows (files appear whole)."""
    deadline = time.monotonic() + timeout
    while (found := logged_rows(log_dir)) < expected:
        assert time.monotonic() < deadline, f"{found} of {expected} rows logged after {timeout}s"
        time.sleep(0.2)
    assert found == expected, f"{found} rows logged, {expected} sent"


def shift(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The deliberate shift: prices up 50% and a contract mix moved to two-year contracts."""
    out = []
    for i, row in enumerate(rows):
        row = dict(row, monthly_charges=round(row["monthly_charges"] * 1.5, 2))
        if i % 2 == 0:
            row["contract"] = "Two year"
        out.append(row)
    return out


def alert_test(pushed: dict[str, float], firing: bool) -> dict[str, Any]:
    """A promtool test group whose input is the pushed `mlops_drift_detected` series, held for an hour,
    and whose expectation is the rule's alert (labels and rendered annotations) or none."""
    rule = next(
        r for g in yaml.safe_load(RULES.read_text())["groups"] for r in g["rules"] if r.get("alert") == ALERT
    )
    labels = {k: v for k, v in pushed.items() if k not in ("__name__", "__value__") and v != ""}
    series = "mlops_drift_detected{" + ",".join(f'{k}="{v}"' for k, v in sorted(labels.items())) + "}"

    def render(text: str) -> str:
        return re.sub(r"\{\{\s*\$labels\.(\w+)\s*\}\}", lambda m: labels.get(m.group(1), ""), text)

    expected = {
        "exp_labels": {**labels, **rule.get("labels", {})},
        "exp_annotations": {k: render(v) for k, v in rule.get("annotations", {}).items()},
    }
    return {
        "name": f"{ALERT} on the pushed values (drift detected = {pushed['__value__']:g})",
        "interval": "1m",
        "input_series": [{"series": series, "values": f"{pushed['__value__']:g}x60"}],
        "alert_rule_test": [
            {"eval_time": "59m", "alertname": ALERT, "exp_alerts": [expected] if firing else []}
        ],
    }


def detected_sample(text: str) -> dict[str, Any]:
    """The pushed mlops_drift_detected sample (labels + value) from a Pushgateway scrape."""
    samples = [
        (dict(labels), value)
        for (name, labels), value in parse_metrics(text).items()
        if name == "mlops_drift_detected"
    ]
    assert len(samples) == 1, samples
    labels, value = samples[0]
    return {**labels, "__value__": value}


def test_production_week(pipeline: Workspace, tmp_path: Path):
    started = time.monotonic()
    # -- release: gate, register (reference.parquet staged), fetch as the chart's init container does
    ws = copy_workspace(pipeline, tmp_path / "ws")
    assert ws.mlops(*gate_args(ws)) == 0
    name = f"churn-week-{os.getpid()}"
    assert ws.mlops(*register_args(ws, name)) == 0
    model_dir = tmp_path / "mnt/model"
    assert ws.mlops("fetch-model", "--name", name, "--version", "candidate", "--dest", str(model_dir)) == 0
    reference = model_dir / "reference.parquet"
    assert reference.is_file()

    params = yaml.safe_load(ws.params.read_text())
    params["retrain"].update(provider="github", cooldown_hours=24.0)
    ws.params.write_text(yaml.safe_dump(params, sort_keys=False))

    spec = ModelSpec.from_dir(model_dir)
    rows = split_rows(ws.raw, ws.processed / "test.parquet", spec)
    assert len(rows) >= params["drift"]["min_rows"], "the test split is smaller than drift.min_rows"
    log_dir = tmp_path / "predictions"
    server = start_server(
        tmp_path / "serve",
        model_dir,
        workers=2,
        prediction_log={"rate": 1.0, "dir": str(log_dir), "flush_interval_s": 0.2},
    )
    with contextlib.ExitStack() as stack:
        stack.callback(server.stop)
        gateway = stack.enter_context(contextlib.contextmanager(pushgateway_process)(tmp_path))
        ci = stack.enter_context(running(token=TOKEN))
        env = {
            **os.environ,
            "MLOPS_RETRAIN_TOKEN": TOKEN,
            "GITHUB_API_URL": f"{ci.url}/github",
            "GITHUB_REPOSITORY": "acme/churn",
        }

        def drift(window: Path, out: str, *extra: str) -> subprocess.CompletedProcess:
            cmd = [sys.executable, "-m", "mlops.cli", "--params", str(ws.params), "drift"]
            cmd += ["--log-dir", str(window), "--reference", str(reference), "--out-dir", str(tmp_path / out)]
            cmd += ["--push-url", gateway, "--json", *extra]
            return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=300)

        # -- days 1-5: normal traffic
        replay(server.url, spec, rows)
        wait_logged(log_dir, len(rows))
        quiet = drift(log_dir, "drift-normal", "--trigger")
        assert quiet.returncode == 0, quiet.stderr
        summary = strict_json(tmp_path / "drift-normal/summary.json")
        assert summary["status"] == "no_drift" and summary["rows"]["current"] == len(rows)
        assert summary["drifted_features"] == [], summary["features"]
        assert not summary["prediction"]["drifted"]
        quiet_push = detected_sample(scrape(gateway))
        assert quiet_push["__value__"] == 0 and ci.started() == []
        # the week goes on: days 1-5's files leave the window (as --window-hours would drop them)
        archive = tmp_path / "archive"
        archive.mkdir()
        for f in log_dir.glob("predictions-*.jsonl"):
            f.rename(archive / f.name)

        # -- days 6-7: the customer mix shifts
        replay(server.url, spec, shift(rows))
        wait_logged(log_dir, len(rows))
        shifted = drift(log_dir, "drift-shifted", "--trigger")
        assert shifted.returncode == 7, shifted.stderr
        assert json.loads(shifted.stdout)["drifted_features"] == SHIFTED
        summary = strict_json(tmp_path / "drift-shifted/summary.json")
        assert summary["drifted_features"] == SHIFTED
        assert {n for n, f in summary["features"].items() if f["drifted"]} == set(SHIFTED)
        assert summary["trigger"]["triggered"] is True
        (run,) = ci.started("github")
        assert run["ref"] == "main" and "contract, monthly_charges" in run["reason"]
        drift_push = detected_sample(scrape(gateway))
        assert drift_push["__value__"] == 1 and drift_push["job"] == "mlops_drift"
        assert drift_push["model"] == spec.name

        # a second drift run within the cooldown: exit 7 again, the trigger is a no-op
        again = drift(log_dir, "drift-again", "--trigger")
        assert again.returncode == 7, again.stderr
        assert strict_json(tmp_path / "drift-again/summary.json")["trigger"]["triggered"] is False
        assert len(ci.started("github")) == 1

    # -- the drift alert rule on the pushed values: fires for the shifted week, not for the quiet one
    test_file = tmp_path / "drift-alert.test.yaml"
    test_file.write_text(
        yaml.safe_dump(
            {
                "rule_files": [str(RULES)],
                "evaluation_interval": "1m",
                "tests": [alert_test(quiet_push, firing=False), alert_test(drift_push, firing=True)],
            },
            sort_keys=False,
        )
    )
    promtool = subprocess.run(["promtool", "test", "rules", str(test_file)], capture_output=True, text=True)
    assert promtool.returncode == 0, promtool.stdout + promtool.stderr
    print(f"production week: {time.monotonic() - started:.1f}s", file=sys.stderr)
