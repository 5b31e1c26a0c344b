"""`mlops drift`: verdicts on synthetic windows of the demo schema, outputs, exit codes, metrics.

The reference and the windows are drawn from the same fixed distributions (seeded), so an unshifted
window differs from the reference by sampling noise only: 2,000 window rows against 4,000 reference
rows keep every distance well under the 0.1 thresholds of the fixture params (largest here ~0.05), and
the shifts applied are an order of magnitude above them.
"""

from __future__ import annotations

import datetime as dt
import json
import subprocess
import sys

import numpy as np
import pytest
import yaml

from mlops import cli

from .drift_helpers import (
    log_records,
    parse_metrics,
    pushgateway,  # noqa: F401 - fixture
    scrape,
    strict_json,
    synthetic_rows,
    write_log,
    write_reference,
)
from conftest import FIXTURE_PARAMS, free_port

pytestmark = pytest.mark.slow
NOW = dt.datetime.now(dt.UTC)
MODEL = "churn-mlp"


@pytest.fixture(scope="module")
def reference(params, tmp_path_factory):
    return write_reference(tmp_path_factory.mktemp("ref") / "reference.parquet", params.schema_)


def window(tmp_path, params, n=2000, seed=7, shift=None, proba=None):
    """Write a log window of `n` synthetic rows, `shift(frame)` applied; return its directory."""
    frame = synthetic_rows(params.schema_, n, seed)
    if shift:
        shift(frame)
    log_dir = tmp_path / "predictions"
    write_log(
        log_dir, log_records(frame, NOW - dt.timedelta(minutes=5), proba), NOW - dt.timedelta(minutes=5)
    )
    return log_dir


def drift(tmp_path, log_dir, reference, *extra):
    args = ["--params", str(FIXTURE_PARAMS), "drift", "--log-dir", str(log_dir)]
    args += ["--reference", str(reference), "--out-dir", str(tmp_path / "out")]
    return cli.main([*args, "--metrics-file", str(tmp_path / "drift.prom"), *extra])


def scale_charges(frame):
    frame["monthly_charges"] = frame["monthly_charges"] * 1.5


def more_two_year(frame):
    frame.loc[np.arange(len(frame)) % 2 == 0, "contract"] = "Two year"


def metrics(tmp_path):
    return parse_metrics((tmp_path / "drift.prom").read_text())


def test_unshifted_window_is_not_drift(tmp_path, params, reference):
    assert drift(tmp_path, window(tmp_path, params), reference) == 0
    summary = strict_json(tmp_path / "out/summary.json")
    assert summary["status"] == "no_drift" and summary["drifted_features"] == []
    assert set(summary["features"]) == set(params.schema_.features)
    assert all(f["score"] < 0.07 for f in summary["features"].values()), summary["features"]
    methods = {n: f["method"] for n, f in summary["features"].items()}
    assert {methods[n] for n in params.schema_.numeric} == {"wasserstein"}
    assert {methods[n] for n in params.schema_.categorical} == {"jensenshannon"}
    assert summary["prediction"]["method"] == "wasserstein" and not summary["prediction"]["drifted"]
    report = (tmp_path / "out/report.html").read_text()
    assert "<html" in report and "monthly_charges" in report
    m = metrics(tmp_path)
    assert m[("mlops_drift_detected", frozenset({("model", MODEL)}))] == 0
    assert m[("mlops_drift_rows", frozenset({("model", MODEL), ("dataset", "current")}))] == 2000
    assert m[("mlops_drift_rows", frozenset({("model", MODEL), ("dataset", "reference")}))] == 4000
    assert m[("mlops_drift_threshold_share", frozenset({("model", MODEL)}))] == 0.1


def test_shifted_numeric_and_categorical_features_are_flagged_exit_7(tmp_path, params, reference, capsys):
    def shift(frame):
        scale_charges(frame)
        more_two_year(frame)

    assert drift(tmp_path, window(tmp_path, params, shift=shift), reference) == 7
    assert "2 of 19 features drifted" in capsys.readouterr().err
    summary = strict_json(tmp_path / "out/summary.json")
    assert summary["status"] == "drift" and summary["drift_detected"] is True
    assert summary["drifted_features"] == ["contract", "monthly_charges"]
    assert summary["share_drifted_features"] == pytest.approx(2 / 19)
    m = metrics(tmp_path)
    flagged = {
        dict(labels)["feature"]
        for (name, labels), value in m.items()
        if name == "mlops_drift_feature_drifted" and value == 1
    }
    assert flagged == {"contract", "monthly_charges"}
    assert m[("mlops_drift_detected", frozenset({("model", MODEL)}))] == 1
    score = ("mlops_drift_feature_score", frozenset({("model", MODEL), ("feature", "monthly_charges")}))
    assert m[(score[0], score[1] | {("method", "wasserstein")})] > 0.5


def test_one_drifted_feature_is_below_the_share_threshold(tmp_path, params, reference):
    assert drift(tmp_path, window(tmp_path, params, shift=more_two_year), reference) == 0
    summary = strict_json(tmp_path / "out/summary.json")
    assert summary["status"] == "no_drift" and summary["drifted_features"] == ["contract"]
    assert summary["features"]["contract"]["drifted"] is True


def test_prediction_drift_is_reported_without_failing(tmp_path, params, reference):
    proba = np.random.default_rng(3).beta(5, 2, 2000)  # the reference's probabilities are beta(2, 5)
    assert drift(tmp_path, window(tmp_path, params, proba=proba), reference) == 0
    summary = strict_json(tmp_path / "out/summary.json")
    assert summary["prediction"]["drifted"] is True and summary["prediction"]["score"] > 0.5
    assert metrics(tmp_path)[("mlops_drift_prediction_drifted", frozenset({("model", MODEL)}))] == 1


def test_insufficient_data_is_no_verdict(tmp_path, params, reference, capsys):
    # few rows, and shifted: still not drift
    assert drift(tmp_path, window(tmp_path, params, n=999, shift=scale_charges), reference) == 0
    summary = strict_json(tmp_path / "out/summary.json")
    assert summary["status"] == "insufficient_data" and summary["drift_detected"] is False
    assert "999 logged rows" in summary["message"] and "min_rows=1000" in summary["message"]
    assert "insufficient data" in (tmp_path / "out/report.html").read_text()
    m = metrics(tmp_path)
    assert m[("mlops_drift_insufficient_data", frozenset({("model", MODEL)}))] == 1
    assert m[("mlops_drift_detected", frozenset({("model", MODEL)}))] == 0


def test_no_log_at_all_is_insufficient_data(tmp_path, params, reference):
    assert drift(tmp_path, tmp_path / "nothing-logged-yet", reference) == 0
    assert strict_json(tmp_path / "out/summary.json")["rows"]["current"] == 0


def test_missing_and_unknown_category_rates(tmp_path, params, reference):
    def damage(frame):
        frame["internet_service"] = frame["internet_service"].astype(object)
        frame.loc[frame.index % 5 == 0, "internet_service"] = "Satellite"  # 20% unknown
        frame["total_charges"] = frame["total_charges"].astype(object)
        frame.loc[frame.index % 10 == 0, "total_charges"] = None  # 10% missing

    assert drift(tmp_path, window(tmp_path, params, shift=damage), reference) in (0, 7)
    summary = strict_json(tmp_path / "out/summary.json")
    current = summary["rates"]["current"]
    assert current["internet_service"]["unknown_category_rate"] == pytest.approx(0.2)
    assert current["total_charges"]["missing_rate"] == pytest.approx(0.1)
    assert current["contract"]["unknown_category_rate"] == 0.0
    assert current["tenure"]["unknown_category_rate"] is None  # numeric: no categories
    assert summary["features"]["internet_service"]["drifted"] is True  # a new category moves the mix
    m = metrics(tmp_path)
    key = frozenset({("model", MODEL), ("feature", "internet_service")})
    assert m[("mlops_drift_unknown_category_rate", key)] == pytest.approx(0.2)
    key = frozenset({("model", MODEL), ("feature", "total_charges")})
    assert m[("mlops_drift_missing_rate", key)] == pytest.approx(0.1)


def test_a_feature_with_no_values_keeps_the_json_strict(tmp_path, params, reference):
    def blank(frame):
        frame["total_charges"] = None

    assert drift(tmp_path, window(tmp_path, params, shift=blank), reference) == 0
    summary = strict_json(tmp_path / "out/summary.json")  # raises on NaN/Infinity
    result = summary["features"]["total_charges"]
    assert result["score"] is None and result["drifted"] is False and "no values" in result["note"]


def test_damaged_files_are_counted_not_fatal(tmp_path, params, reference):
    log_dir = window(tmp_path, params)
    (log_dir / f"predictions-{NOW:%Y%m%dT%H%M%S}-1-000099.jsonl").write_bytes(b'{"ts": "2026-')
    assert drift(tmp_path, log_dir, reference) == 0
    summary = strict_json(tmp_path / "out/summary.json")
    assert summary["files"]["skipped"] == 1 and summary["rows"]["current"] == 2000
    assert metrics(tmp_path)[("mlops_drift_skipped_files", frozenset({("model", MODEL)}))] == 1


def test_window_hours_option_overrides_params(tmp_path, params, reference):
    frame = synthetic_rows(params.schema_, 1500, seed=7)
    old = NOW - dt.timedelta(hours=30)
    write_log(tmp_path / "predictions", log_records(frame, old), old)
    assert drift(tmp_path, tmp_path / "predictions", reference) == 0  # params: 24 h
    assert strict_json(tmp_path / "out/summary.json")["status"] == "insufficient_data"
    assert drift(tmp_path, tmp_path / "predictions", reference, "--window-hours", "48") == 0
    summary = strict_json(tmp_path / "out/summary.json")
    assert summary["status"] == "no_drift" and summary["window"]["hours"] == 48


def test_an_encoded_training_split_as_reference_joins_the_raw_rows(pipeline, params):
    """The local default, data/processed/train.parquet (ids + 0/1 label), is joined with the raw table."""
    import pandas as pd

    from mlops.monitor.drift import load_reference

    ref = load_reference(str(pipeline.processed / "train.parquet"), params.schema_, pipeline.raw)
    train = pd.read_parquet(pipeline.processed / "train.parquet")
    assert len(ref) == len(train) and set(params.schema_.features) <= set(ref.columns)
    assert "probability" not in ref.columns  # so prediction drift is not tested with it
    raw = pd.read_parquet(pipeline.raw).set_index(params.schema_.id)
    first = ref.iloc[0]
    assert raw.loc[first[params.schema_.id], "contract"] == first["contract"]


def test_a_failing_retrain_trigger_is_recorded_and_the_verdict_stands(
    tmp_path, params, reference, monkeypatch
):
    """No token for the trigger (a configuration error of the trigger): still exit 7, the summary says why
    no retrain started. (The trigger called for real: tests/e2e/test_production_week.py.)"""
    monkeypatch.delenv("MLOPS_RETRAIN_TOKEN", raising=False)
    monkeypatch.setenv("GITHUB_REPOSITORY", "acme/churn")
    monkeypatch.setenv("GITHUB_API_URL", f"http://127.0.0.1:{free_port()}")  # never reached
    data = yaml.safe_load(FIXTURE_PARAMS.read_text())
    data["retrain"]["provider"] = "github"
    data["drift"]["trigger_retrain"] = True
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(data))
    shifted = window(tmp_path, params, shift=lambda f: (scale_charges(f), more_two_year(f)))
    args = ["--params", str(tmp_path / "params.yaml"), "drift", "--log-dir", str(shifted)]
    assert cli.main([*args, "--reference", str(reference), "--out-dir", str(tmp_path / "out")]) == 7
    trigger = strict_json(tmp_path / "out/summary.json")["trigger"]
    assert trigger["triggered"] is False and "MLOPS_RETRAIN_TOKEN" in trigger["error"]


def test_an_unknown_stattest_is_a_config_error(tmp_path, params, reference, capsys):
    data = yaml.safe_load(FIXTURE_PARAMS.read_text())
    data["drift"]["categorical"]["method"] = "wasserstien"
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(data))
    args = ["--params", str(tmp_path / "params.yaml"), "drift", "--log-dir", str(window(tmp_path, params))]
    assert cli.main([*args, "--reference", str(reference), "--out-dir", str(tmp_path / "out")]) == 2
    assert "drift.categorical.method: No stattest found of name wasserstien" in capsys.readouterr().err


def test_unreadable_reference_exits_3_naming_it(tmp_path, params, capsys):
    (tmp_path / "ref.parquet").write_text("not parquet")
    assert drift(tmp_path, window(tmp_path, params), tmp_path / "ref.parquet") == 3
    assert "ref.parquet" in capsys.readouterr().err


def test_cli_exit_codes_in_a_subprocess(tmp_path, params, reference):
    """The installed entry point: exit 7 on drift (one error line), 0 without, --json on stdout."""

    def run(log_dir):
        return subprocess.run(
            [sys.executable, "-m", "mlops.cli", "--params", str(FIXTURE_PARAMS), "drift"]
            + ["--log-dir", str(log_dir), "--reference", str(reference), "--out-dir", str(tmp_path / "o")]
            + ["--json"],
            capture_output=True,
            text=True,
            timeout=300,
        )

    calm = run(window(tmp_path / "calm", params))
    assert calm.returncode == 0, calm.stderr
    assert json.loads(calm.stdout)["status"] == "no_drift"
    shifted = run(window(tmp_path / "shifted", params, shift=lambda f: (scale_charges(f), more_two_year(f))))
    assert shifted.returncode == 7, shifted.stderr
    assert "mlops drift: error:" in shifted.stderr and "contract, monthly_charges" in shifted.stderr
    assert "Traceback" not in shifted.stderr


def test_metrics_are_pushed_to_a_real_pushgateway(tmp_path, params, reference, pushgateway):  # noqa: F811
    shifted = window(tmp_path, params, shift=lambda f: (scale_charges(f), more_two_year(f)))
    assert drift(tmp_path, shifted, reference, "--push-url", pushgateway) == 7
    m = parse_metrics(scrape(pushgateway))
    group = {("job", "mlops_drift"), ("model", MODEL), ("instance", "")}
    assert m[("mlops_drift_detected", frozenset(group))] == 1
    assert m[("mlops_drift_share_drifted_features", frozenset(group))] == pytest.approx(2 / 19)
    key = frozenset(group | {("feature", "contract")})
    assert m[("mlops_drift_feature_drifted", key)] == 1
    assert m[("mlops_drift_last_run_timestamp_seconds", frozenset(group))] > NOW.timestamp() - 60
    # the next run replaces the model's group: detected goes back to 0
    assert (
        drift(tmp_path / "again", window(tmp_path / "again", params), reference, "--push-url", pushgateway)
        == 0
    )
    assert parse_metrics(scrape(pushgateway))[("mlops_drift_detected", frozenset(group))] == 0


def test_push_url_from_params_and_an_unreachable_gateway(tmp_path, params, reference, capsys):
    data = yaml.safe_load(FIXTURE_PARAMS.read_text())
    data["drift"]["push_url"] = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(data))
    base = ["--params", str(tmp_path / "params.yaml"), "drift", "--reference", str(reference)]
    base += ["--out-dir", str(tmp_path / "out")]
    # no drift: the failed push is the error (exit 1), the summary is still written
    assert cli.main([*base, "--log-dir", str(window(tmp_path / "a", params))]) == 1
    assert "pushgateway http://127.0.0.1:" in capsys.readouterr().err
    assert strict_json(tmp_path / "out/summary.json")["status"] == "no_drift"
    # drift: the verdict (exit 7) wins, and names the failed push
    shifted = window(tmp_path / "b", params, shift=lambda f: (scale_charges(f), more_two_year(f)))
    assert cli.main([*base, "--log-dir", str(shifted)]) == 7
    assert "push of the drift metrics failed" in capsys.readouterr().err
