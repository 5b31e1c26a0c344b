"""Gate behaviour: absolute bounds, slices, ONNX parity and budgets; no registry, nothing under deploy/.

The comparison with the champion is not a gate rule (tests/test_compare.py, tests/registry/test_report.py
and tests/deploy/test_promote.py test it where it runs: the review report and `mlops promote`).
"""

from __future__ import annotations

import hashlib
import json

import pytest
import yaml

from mlops.config import parse_params
from mlops.errors import ConfigError
from mlops.stages import gate

from .conftest import copy_workspace, gate_args, perturb_weights, set_gate, write_record
from conftest import FIXTURE_PARAMS


def read_gate(ws) -> dict:
    return json.loads((ws.root / "reports/gate.json").read_text())


def by_id(result: dict) -> dict[str, dict]:
    return {r["id"]: r for r in result["rules"]}


# ---------------------------------------------------------------- absolute rules
def test_shipped_params_pass(gated):
    """The demo model passes the shipped gate: absolute rules only, no champion in gate.json."""
    result = read_gate(gated)
    assert result["passed"] is True and result["failed"] == []
    assert "champion" not in result and "champion_note" not in result
    rules = by_id(result)
    for rid in (
        "metrics.min.roc_auc",
        "metrics.max.log_loss",
        "metrics.max.ece",
        "latency.p95_ms_single",
        "latency.p95_ms_batch",
        "onnx_parity.max_abs_diff",
        "max_model_bytes",
    ):
        assert rules[rid]["verdict"] == "pass", rid
    assert not any(r["kind"] == "champion" for r in result["rules"])
    assert any(rid.startswith("slices.min.roc_auc[contract=") for rid in rules)
    md = (gated.root / "reports/gate.md").read_text()
    assert "✅ passed" in md and "| `metrics.min.roc_auc` |" in md and "champion" not in md.lower()


def test_gate_ignores_promotion_records_and_needs_no_registry(pipeline, tmp_path, monkeypatch):
    """A production record naming a version no registry holds, and no reachable registry: the gate
    neither reads the record nor contacts a registry, and writes the same verdicts as without it."""
    ws = copy_workspace(pipeline, tmp_path / "ws")
    write_record(ws.root / "deploy/envs/production/model.yaml", "no-such-model", "7", "0" * 64)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")  # nothing listens on port 9
    monkeypatch.chdir(ws.root)
    assert ws.mlops(*gate_args(ws), "--no-fail") == 0
    result = read_gate(ws)
    assert {r["kind"] for r in result["rules"]} <= {"absolute", "slice", "parity", "budget"}
    assert "--champion" not in gate_args(ws)


def test_tracked_reports_hold_verdicts_not_measured_latencies(gated, tmp_path):
    """gate.json/gate.md are DVC outputs: rerunning the gate gives the same bytes; timings go elsewhere."""

    def report(ws, name: str) -> str:  # paths in the report are under the workspace root
        return (ws.root / f"reports/{name}").read_text().replace(str(ws.root), "ROOT")

    first = {n: report(gated, n) for n in ("gate.json", "gate.md")}
    rules = by_id(read_gate(gated))
    for rid in ("latency.p95_ms_single", "latency.p95_ms_batch"):
        assert rules[rid]["value"] is None and rules[rid]["measured"] is True, rid
    timings = json.loads((gated.root / "reports/gate-timings.json").read_text())
    assert all(t > 0 for t in timings["latency.p95_ms_single"]["p95_ms"])
    ws = copy_workspace(gated, tmp_path / "ws")
    assert ws.mlops(*gate_args(ws)) == 0
    for name, data in first.items():
        assert report(ws, name) == data, f"{name} differs between two runs"
    assert json.loads((ws.root / "reports/gate-timings.json").read_text()) != timings  # measured anew
    # the review report (not tracked) may show the measured values
    shown = gate.markdown(read_gate(gated), timings)
    assert f"{timings['latency.p95_ms_single']['p95_ms'][0]:.3g} ms" in shown and "see timings" not in shown


def test_onnx_parity_of_the_served_file(gated):
    """serve.backend onnx: the gate scores the test split with model.onnx on ONNX Runtime and with the
    weights on torch; gate.json carries the max difference rounded up to a power of ten, the timings
    file the exact figure, and the latency rules were measured on ONNX Runtime."""
    parity = by_id(read_gate(gated))["onnx_parity.max_abs_diff"]
    assert parity["kind"] == "parity" and parity["backend"] == "onnx" and parity["verdict"] == "pass"
    timings = json.loads((gated.root / "reports/gate-timings.json").read_text())
    exact = timings["onnx_parity.max_abs_diff"]
    assert 0 <= exact <= parity["value"] <= 1e-6 and timings["backend"] == "onnx"
    assert parity["value"] in (0.0, 1e-8, 1e-7, 1e-6)  # a power of ten: the same on every machine
    assert "| `onnx_parity.max_abs_diff` | ≤ " in (gated.root / "reports/gate.md").read_text()


def test_onnx_file_of_other_weights_fails_parity(pipeline, tmp_path):
    """An ONNX export that is not the network of the weights (checksums consistent) is blocked."""
    ws = copy_workspace(pipeline, tmp_path / "ws")
    stale = (ws.models / "model.onnx").read_bytes()
    perturb_weights(ws, 0.5)  # new weights and their own export
    (ws.models / "model.onnx").write_bytes(stale)  # ... then the old export put back
    meta = json.loads((ws.models / "model.json").read_text())
    meta["onnx"]["sha256"] = hashlib.sha256(stale).hexdigest()
    (ws.models / "model.json").write_text(json.dumps(meta))
    assert ws.mlops(*gate_args(ws), "--no-fail") == 0
    result = read_gate(ws)
    assert "onnx_parity.max_abs_diff" in result["failed"]
    assert by_id(result)["onnx_parity.max_abs_diff"]["value"] > 1e-4


def test_torch_backend_skips_parity_and_times_torch(pipeline, tmp_path):
    ws = copy_workspace(pipeline, tmp_path / "ws")
    data = yaml.safe_load(ws.params.read_text())
    data["serve"]["backend"] = "torch"
    ws.params.write_text(yaml.safe_dump(data, sort_keys=False))
    assert ws.mlops(*gate_args(ws)) == 0
    assert by_id(read_gate(ws))["onnx_parity.max_abs_diff"]["verdict"] == "skip"
    assert json.loads((ws.root / "reports/gate-timings.json").read_text())["backend"] == "torch"


def test_latency_budget_missed_once_is_measured_again():
    """A noisy first measurement gets one more; a slow model misses both and fails."""
    import time

    calls = {"n": 0}

    def slow_first_measurement():
        calls["n"] += 1
        if calls["n"] <= 30:  # warmup 10 + 20 timed calls of the first measurement
            time.sleep(0.003)

    ok, p95s = gate.measure(slow_first_measurement, budget_ms=2.0, repeats=20, warmup=10)
    assert ok and len(p95s) == 2 and p95s[0] > 2.0 > p95s[1]
    ok, p95s = gate.measure(lambda: time.sleep(0.003), budget_ms=2.0, repeats=5, warmup=0)
    assert not ok and len(p95s) == 2 and min(p95s) > 2.0
    ok, p95s = gate.measure(lambda: None, budget_ms=2.0, repeats=5, warmup=0)
    assert ok and len(p95s) == 1  # within budget: measured once


def test_missed_absolute_bound_fails_with_exit_4(pipeline, tmp_path, capsys):
    ws = copy_workspace(pipeline, tmp_path / "ws")
    set_gate(ws, **{"metrics.min": {"roc_auc": 0.99}})
    assert ws.mlops(*gate_args(ws)) == 4
    err = capsys.readouterr().err
    assert "metrics.min.roc_auc" in err and "gate.json" in err
    result = read_gate(ws)
    assert result["passed"] is False and result["failed"] == ["metrics.min.roc_auc"]
    rule = by_id(result)["metrics.min.roc_auc"]
    assert rule["verdict"] == "fail" and rule["bound"] == 0.99 and 0.7 < rule["value"] < 0.99
    assert "❌ fail" in (ws.root / "reports/gate.md").read_text()
    # --no-fail: same verdict written, exit 0 (exploratory runs)
    assert ws.mlops(*gate_args(ws), "--no-fail") == 0
    assert read_gate(ws)["passed"] is False


def test_slice_minimum_and_budgets_fail_by_name(pipeline, tmp_path):
    ws = copy_workspace(pipeline, tmp_path / "ws")
    set_gate(ws, **{"slices.min": {"roc_auc": 0.80}, "max_model_bytes": 1000, "latency.p95_ms_batch": 1e-6})
    assert ws.mlops(*gate_args(ws)) == 4
    failed = read_gate(ws)["failed"]
    assert "max_model_bytes" in failed and "latency.p95_ms_batch" in failed
    assert "slices.min.roc_auc[contract=Month-to-month]" in failed  # demo: ~0.74
    assert "slices.min.roc_auc[internet_service=No]" not in failed  # demo: ~0.90


def test_slice_without_metrics_is_skipped(params):
    rules = gate.slice_rules(
        params.gate,
        {"contract": {"tiny": {"rows": 3, "positive_rate": 0.3}, "big": {"rows": 500, "roc_auc": 0.5}}},
    )
    verdicts = {r["id"]: r["verdict"] for r in rules}
    assert verdicts == {
        "slices.min.roc_auc[contract=tiny]": "skip",
        "slices.min.roc_auc[contract=big]": "fail",
    }


def test_unknown_gate_metric_is_a_config_error():
    data = yaml.safe_load(open(FIXTURE_PARAMS))
    data["gate"]["metrics"]["min"]["auroc"] = 0.8
    with pytest.raises(ConfigError, match=r"gate\.metrics\.min\.auroc: unknown metric"):
        parse_params(data)
    data = yaml.safe_load(open(FIXTURE_PARAMS))
    data["gate"]["champion"] = data["champion"]  # the comparison moved out of the gate
    with pytest.raises(ConfigError, match=r"gate\.champion: unknown key"):
        parse_params(data)
