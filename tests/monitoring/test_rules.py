"""The monitoring files checked by their own tools: the canonical Prometheus rules (`promtool check rules`
and the `promtool test rules` unit tests in monitoring/tests/, which must cover every alert firing and
silent and must fail on a broken rule), every dashboard expression (as a recording rule through
`promtool check rules`), the names they select (series the server and the drift job really export), the
Alertmanager config (`amtool check-config`, its routing tree), and a real Alertmanager delivering a
posted drift alert to a recording webhook (test double) and, in a second test, to the real retrain
receiver (`mlops trigger-retrain --listen`), which starts one run on the CI test double.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path

import httpx
import pytest
import yaml

from . import promql
from .daemons import alertmanager
from .webhook_double import running as webhook_double
from conftest import free_port


# ---------------------------------------------------------------- rules
def test_monitoring_links_point_at_the_chart_files():
    """One source: monitoring/ holds relative links to the files the chart packages, not copies."""
    for link, target in ((promql.RULES_LINK, promql.RULES), (promql.DASHBOARD_LINK, promql.DASHBOARD)):
        assert link.is_symlink(), f"{link} must be a link to {target} (one source), not a copy"
        assert not Path(os.readlink(link)).is_absolute()
        assert link.resolve() == target.resolve()


def test_rules_pass_promtool_check():
    result = promql.promtool("check", "rules", str(promql.RULES_LINK))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(promql.all_rules())} rules found" in result.stdout


def test_rules_aggregate_by_scrape_labels_and_name_no_release():
    """Recording rules keep the target labels of a real scrape; nothing names a release or namespace."""
    for rule in promql.all_rules():
        for needle in ('namespace="', 'service="', 'job="', "model-server"):
            assert needle not in rule["expr"], f"{rule.get('record') or rule['alert']} hardcodes {needle!r}"
        if rule.get("record", "").startswith("mlops:serve_") and " by (" in rule["expr"]:
            assert "by (namespace, service, job" in rule["expr"], rule["record"]


def test_rules_read_only_recordings_evaluated_before_them_in_their_group():
    """A rule that reads a recorded series sits after that recording rule in the same group: groups are
    evaluated in no fixed order (promtool test: map order), so a reader in another group can miss the
    sample within the 5m lookback and its alert flakes (seen as an intermittent drift-daily failure)."""
    for group in promql.load_rules()["groups"]:
        earlier: set[str] = set()
        for rule in group["rules"]:
            name = rule.get("record") or rule["alert"]
            for recorded in promql.recorded_names():
                if recorded in rule["expr"]:
                    assert recorded in earlier, (
                        f"{name} (group {group['name']}) reads {recorded}, which is not recorded before it "
                        "in the same group"
                    )
            if "record" in rule:
                earlier.add(rule["record"])


def test_example_prometheus_config_passes_promtool():
    """monitoring/prometheus/prometheus.yml (plain Prometheus) is valid and loads the canonical rules."""
    result = promql.promtool("check", "config", str(promql.PROMETHEUS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(promql.all_rules())} rules found" in result.stdout
    config = yaml.safe_load(promql.PROMETHEUS.read_text())
    assert [(promql.PROMETHEUS.parent / f).resolve() for f in config["rule_files"]] == [
        promql.RULES.resolve()
    ]
    (gateway,) = [j for j in config["scrape_configs"] if j["job_name"] == "pushgateway"]
    assert gateway["honor_labels"] is True  # keeps the pushed job="mlops_drift" and model labels


def test_unit_tests_pass():
    assert {p.name for p in promql.UNIT_TESTS} >= {"serve.test.yaml", "drift.test.yaml"}
    result = promql.promtool("test", "rules", *map(str, promql.UNIT_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.count("SUCCESS") == len(promql.UNIT_TESTS), result.stdout


def test_every_alert_has_a_firing_and_a_silent_case():
    firing: set[str] = set()
    silent: set[str] = set()
    for path in promql.UNIT_TESTS:
        for case in yaml.safe_load(path.read_text())["tests"]:
            for check in case.get("alert_rule_test", []):
                (firing if check.get("exp_alerts") else silent).add(check["alertname"])
    alerts = set(promql.alert_names())
    assert "MlopsDataDrift" in alerts  # the retrain route and the drift e2e test use this name
    assert alerts - firing == set(), "alerts never tested firing"
    assert alerts - silent == set(), "alerts never tested silent"
    assert (firing | silent) - alerts == set(), "tests of alerts that do not exist"


def test_unit_tests_fail_on_a_broken_rule(tmp_path):
    """The unit tests are not vacuous: a wrong drift condition and a loosened threshold both fail."""
    rules = promql.load_rules()
    for rule in promql.all_rules(rules):
        if rule.get("alert") == "MlopsDataDrift":
            rule["expr"] = "mlops_drift_detected == 2"
        if rule.get("alert") == "MlopsServeErrorRatioHigh":
            rule["expr"] = rule["expr"].replace("> 0.01", "> 0.2")
    (tmp_path / "rules").mkdir()
    (tmp_path / "rules/mlops.rules.yaml").write_text(yaml.safe_dump(rules, sort_keys=False))
    (tmp_path / "tests").mkdir()
    for path in promql.UNIT_TESTS:
        shutil.copy(path, tmp_path / "tests" / path.name)
    result = promql.promtool("test", "rules", *(p.name for p in promql.UNIT_TESTS), cwd=tmp_path / "tests")
    assert result.returncode != 0
    assert "alertname: MlopsDataDrift" in result.stderr
    assert "alertname: MlopsServeErrorRatioHigh" in result.stderr


# ---------------------------------------------------------------- dashboard
def test_dashboard_is_a_grafana_dashboard():
    d = promql.load_dashboard()
    assert d["uid"] and d["title"] and isinstance(d["schemaVersion"], int)
    names = [v["name"] for v in d["templating"]["list"]]
    assert names[0] == "datasource" and {"namespace", "job", "model"} <= set(names)
    ids = [p["id"] for p in promql.panels(d)]
    assert len(ids) == len(set(ids)), "duplicate panel ids"
    for p in promql.panels(d):
        g = p["gridPos"]
        assert g["x"] + g["w"] <= 24 and g["h"] > 0, p["title"]
        if p["type"] == "row":
            continue
        assert p["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, p["title"]
        refs = [t["refId"] for t in p["targets"]]
        assert p["targets"] and len(refs) == len(set(refs)), p["title"]
        assert all(t["datasource"] == p["datasource"] for t in p["targets"]), p["title"]
    titles = " ".join(p["title"].lower() for p in promql.panels(d))
    for topic in ("requests", "latency", "forward pass", "class mix", "drift score per feature", "log"):
        assert topic in titles, f"no {topic!r} panel"


def test_every_dashboard_query_passes_promtool(tmp_path):
    queries = promql.dashboard_queries()
    exprs = {promql.recording_name(i): q.expr for i, q in enumerate(queries)}
    for name, selector, _label in promql.variable_queries():
        exprs[f"dashboard:variable_{name}"] = selector
    path = tmp_path / "dashboard.rules.yaml"
    path.write_text(promql.rule_file(exprs))
    result = promql.promtool("check", "rules", str(path))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(exprs)} rules found" in result.stdout
    assert len(queries) >= 25


def test_promtool_rejects_a_broken_query(tmp_path):
    """The check is not vacuous: one malformed expression among good ones fails it, naming it."""
    path = tmp_path / "broken.rules.yaml"
    path.write_text(
        promql.rule_file({"dashboard:ok": "sum(up)", "dashboard:broken": "sum by (le (rate(up[1m]))"})
    )
    result = promql.promtool("check", "rules", str(path))
    assert result.returncode != 0
    assert '"dashboard:broken": could not parse expression' in result.stderr


def test_rules_and_dashboard_select_only_real_series():
    """Every mlops name in a rule or dashboard query is exported by the server or the drift job, or is
    a recording rule of the canonical file; every recording rule serves the dashboard or an alert."""
    recorded = promql.recorded_names()
    known = recorded | promql.server_metric_names() | promql.drift_metric_names()
    assert "mlops_serve_requests_total" in known and "mlops_drift_detected" in known
    used: set[str] = set()
    for rule in promql.all_rules():
        names = promql.metric_names_in(rule["expr"])
        assert names <= known, f"{rule.get('record') or rule.get('alert')}: unknown {names - known}"
        used |= names
    for q in promql.dashboard_queries():
        names = promql.metric_names_in(q.expr)
        assert names <= known, f"dashboard {q.name}: unknown {names - known}"
        used |= names
    assert recorded - used == set(), "recording rules nothing reads"


# ---------------------------------------------------------------- Alertmanager
def test_alertmanager_config_checks():
    result = promql.amtool("check-config", str(promql.ALERTMANAGER))
    assert result.returncode == 0, result.stdout + result.stderr
    config = yaml.safe_load(promql.ALERTMANAGER.read_text())
    (retrain,) = [r for r in config["receivers"] if r["name"] == "retrain-trigger"]
    (hook,) = retrain["webhook_configs"]
    # the placeholder Service of `mlops trigger-retrain --listen` and the path it answers
    assert hook["url"] == "http://mlops-retrain-trigger:9095/alertmanager"


@pytest.mark.parametrize(
    "labels, receiver",
    [
        (["alertname=MlopsDataDrift", "model=churn-mlp", "severity=warning"], "retrain-trigger"),
        (["alertname=MlopsServeErrorRatioHigh", "severity=critical", "namespace=mlops"], "default"),
        (["alertname=MlopsPredictionDrift", "model=churn-mlp"], "default"),
        (["alertname=MlopsDriftJobStale", "model=churn-mlp"], "default"),
    ],
)
def test_alertmanager_routes(labels, receiver):
    result = promql.amtool("config", "routes", "test", f"--config.file={promql.ALERTMANAGER}", *labels)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout.split() == [receiver]


def test_amtool_rejects_a_route_to_a_missing_receiver(tmp_path):
    config = yaml.safe_load(promql.ALERTMANAGER.read_text())
    config["route"]["routes"][0]["receiver"] = "retrain-triger"
    path = tmp_path / "alertmanager.yml"
    path.write_text(yaml.safe_dump(config))
    result = promql.amtool("check-config", str(path))
    assert result.returncode != 0
    assert "retrain-triger" in result.stdout + result.stderr


@pytest.mark.slow
def test_live_alertmanager_sends_drift_alert_to_the_retrain_webhook(tmp_path):
    """A real Alertmanager with the canonical config (only the webhook URL pointed at a local test
    double) delivers a posted MlopsDataDrift alert to the webhook as a v4 notification, and routes a
    critical server alert to the default receiver, not to the retrain trigger."""
    with webhook_double() as (base, recorder):
        text = promql.ALERTMANAGER.read_text()
        assert text.count("http://mlops-retrain-trigger:9095") == 1
        config = tmp_path / "alertmanager.yml"
        config.write_text(text.replace("http://mlops-retrain-trigger:9095", base))
        with alertmanager(config, tmp_path) as am:
            now = dt.datetime.now(dt.UTC).isoformat()
            alerts = [
                {
                    "labels": {"alertname": "MlopsDataDrift", "model": "churn-mlp", "severity": "warning"},
                    "annotations": {"summary": "model churn-mlp: data drift"},
                    "startsAt": now,
                },
                {
                    "labels": {"alertname": "MlopsServeErrorRatioHigh", "severity": "critical", "job": "m"},
                    "annotations": {"summary": "5xx"},
                    "startsAt": now,
                },
            ]
            response = httpx.post(f"{am.url}/api/v2/alerts", json=alerts, timeout=10)
            assert response.status_code == 200, response.text
            posts = recorder.wait(1, timeout=40)  # the drift route's group_wait is 10s
            assert posts, f"no notification reached the webhook: {am.tail()}"
            active = httpx.get(f"{am.url}/api/v2/alerts", timeout=10).json()
    path, body = posts[0]
    assert path == "/alertmanager"
    assert body["version"] == "4" and body["status"] == "firing"
    assert body["receiver"] == "retrain-trigger"
    assert [a["labels"]["alertname"] for a in body["alerts"]] == ["MlopsDataDrift"]
    assert body["alerts"][0]["labels"]["model"] == "churn-mlp"
    assert body["groupLabels"] == {"alertname": "MlopsDataDrift", "model": "churn-mlp"}
    receivers = {a["labels"]["alertname"]: [r["name"] for r in a["receivers"]] for a in active}
    assert receivers == {"MlopsDataDrift": ["retrain-trigger"], "MlopsServeErrorRatioHigh": ["default"]}
    assert len(recorder.posts) == 1, recorder.posts


@pytest.mark.slow
def test_live_alertmanager_drift_alert_starts_one_retrain_run(tmp_path):
    """The whole alert path with the real receiver: Alertmanager (canonical config, URL pointed at a
    real `mlops trigger-retrain --listen`) notifies it of MlopsDataDrift, and the receiver starts exactly
    one retrain run on the CI (the GitHub API of the labelled CI test double of tests/monitor), with the
    alert named in the reason; a critical server alert starts nothing."""
    from monitor.ci_double import running as ci_double
    from monitor.test_trigger import ci_env, cli_params, receiver_argv

    params = cli_params(tmp_path, "github")
    port = free_port()
    log = tmp_path / "receiver.log"
    with ci_double() as ci, open(log, "wb") as receiver_log:
        receiver = subprocess.Popen(
            receiver_argv(params, port),
            env={**os.environ, **ci_env(ci, "github")},
            stdout=subprocess.DEVNULL,
            stderr=receiver_log,
            start_new_session=True,
        )
        try:
            base = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 60
            while True:
                assert receiver.poll() is None, log.read_text()
                try:
                    if httpx.get(f"{base}/healthz", timeout=2).status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                assert time.monotonic() < deadline, "receiver not up"
                time.sleep(0.2)
            config = tmp_path / "alertmanager.yml"
            config.write_text(
                promql.ALERTMANAGER.read_text().replace("http://mlops-retrain-trigger:9095", base)
            )
            with alertmanager(config, tmp_path) as am:
                now = dt.datetime.now(dt.UTC).isoformat()
                alerts = [
                    {
                        "labels": {
                            "alertname": "MlopsDataDrift",
                            "model": "churn-mlp",
                            "severity": "warning",
                        },
                        "startsAt": now,
                    },
                    {
                        "labels": {"alertname": "MlopsServeErrorRatioHigh", "severity": "critical"},
                        "startsAt": now,
                    },
                ]
                assert httpx.post(f"{am.url}/api/v2/alerts", json=alerts, timeout=10).status_code == 200
                deadline = time.monotonic() + 40
                while not ci.started() and time.monotonic() < deadline:
                    time.sleep(0.5)
                time.sleep(2)  # a second run would show up now
        finally:
            os.killpg(receiver.pid, signal.SIGTERM)
            receiver.wait(30)
    runs = ci.started()
    assert len(runs) == 1, (runs, log.read_text()[-2000:])
    assert runs[0]["provider"] == "github"
    assert "MlopsDataDrift" in runs[0]["reason"] and "churn-mlp" in runs[0]["reason"]
    assert "MlopsServeErrorRatioHigh" not in runs[0]["reason"]


def test_unit_test_files_use_the_link(tmp_path):
    """The promtool unit tests load the rules through monitoring/rules/ (what plain Prometheus loads)."""
    for path in promql.UNIT_TESTS:
        files = yaml.safe_load(path.read_text())["rule_files"]
        assert [(path.parent / f).resolve() for f in files] == [promql.RULES.resolve()], path
    assert Path(promql.RULES_LINK).read_text() == promql.RULES.read_text()
