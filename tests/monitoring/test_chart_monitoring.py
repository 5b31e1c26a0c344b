"""The chart's monitoring objects come from the canonical files: the PrometheusRule is
files/monitoring/mlops.rules.yaml as it is (values only leave out groups or alerts and add alert labels),
the Grafana dashboard ConfigMap carries files/monitoring/mlops-dashboard.json byte for byte with the
sidecar's label; both validate (CRD schema, kubernetes-validate via the ci/ scenario in test_chart.py).
"""

from __future__ import annotations

import copy

import pytest
import yaml
from deploy.k8s import CHART, by_kind, record, validate_all, validate_custom

from mlops.errors import ConfigError
from mlops.gitops import render

from . import promql

SCENARIO = CHART / "ci" / "monitoring-values.yaml"


def rendered(**over) -> list[dict]:
    registry = {"secretName": "mlflow-registry"}  # pragma: allowlist secret
    base = {"environment": "test", "registry": registry, **record("test", "5")}
    return render.render_chart(
        CHART, render.merge_values(base, over), release="model-server", namespace="mlops-test"
    )


def test_off_by_default():
    kinds = {o["kind"] for o in rendered()}
    assert "PrometheusRule" not in kinds and "ConfigMap" not in kinds


def test_prometheus_rule_is_the_canonical_file():
    (rule,) = by_kind(
        rendered(serviceMonitor={"enabled": True}, prometheusRule={"enabled": True}), "PrometheusRule"
    )
    validate_custom(rule)
    assert rule["spec"]["groups"] == promql.load_rules()["groups"]


def test_prometheus_rule_values_leave_out_and_label():
    objects = render.render_chart(
        CHART, render.values_from_files([SCENARIO]), release="model-server", namespace="mlops-test"
    )
    validate_all(objects)
    assert sorted({o["kind"] for o in objects}) == [
        "ConfigMap",
        "Deployment",
        "NetworkPolicy",
        "PodDisruptionBudget",
        "PrometheusRule",
        "Service",
        "ServiceAccount",
        "ServiceMonitor",
    ]
    (rule,) = by_kind(objects, "PrometheusRule")
    expected = copy.deepcopy(promql.load_rules()["groups"])
    expected = [g for g in expected if g["name"] != "mlops-drift"]
    for group in expected:
        group["rules"] = [r for r in group["rules"] if r.get("alert") != "MlopsServeNoTraffic"]
        for r in group["rules"]:
            if "alert" in r:
                r["labels"] = {**r.get("labels", {}), "team": "ml-platform"}
    assert rule["spec"]["groups"] == expected
    assert rule["metadata"]["labels"]["release"] == "kube-prometheus-stack"


def test_alert_labels_override_the_files_severity():
    objects = rendered(prometheusRule={"enabled": True, "alertLabels": {"severity": "page"}})
    (rule,) = by_kind(objects, "PrometheusRule")
    alerts = [r for g in rule["spec"]["groups"] for r in g["rules"] if "alert" in r]
    assert len(alerts) == len(promql.alert_names())
    assert {a["labels"]["severity"] for a in alerts} == {"page"}
    records = [r for g in rule["spec"]["groups"] for r in g["rules"] if "record" in r]
    assert records and not any("labels" in r for r in records)


@pytest.mark.parametrize(
    "key, name",
    [("disabledAlerts", "MlopsServeNoTrafic"), ("excludeGroups", "mlops-serve.alerts")],
)
def test_unknown_names_fail_the_render(key, name):
    with pytest.raises(ConfigError, match=f"prometheusRule.{key}: no .*{name}"):
        rendered(prometheusRule={"enabled": True, key: [name]})


def test_dashboard_configmap_is_the_canonical_json():
    objects = render.render_chart(
        CHART, render.values_from_files([SCENARIO]), release="model-server", namespace="mlops-test"
    )
    (cm,) = by_kind(objects, "ConfigMap")
    assert cm["metadata"]["namespace"] == "monitoring"
    assert cm["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert cm["metadata"]["annotations"] == {"grafana_folder": "MLOps"}
    assert cm["data"] == {"mlops-model-server.json": promql.DASHBOARD.read_text()}


def test_dashboard_sidecar_label_and_namespace_follow_values():
    objects = rendered(
        grafanaDashboard={"enabled": True, "sidecarLabel": "dashboards", "sidecarLabelValue": "mlops"}
    )
    (cm,) = by_kind(objects, "ConfigMap")
    assert cm["metadata"]["labels"]["dashboards"] == "mlops"
    assert "grafana_dashboard" not in cm["metadata"]["labels"]
    assert "namespace" not in cm["metadata"]  # the release namespace
    validate_all([cm])


def test_production_env_enables_rules_and_dashboard():
    vals = yaml.safe_load((promql.REPO / "deploy/envs/production/values.yaml").read_text())
    assert vals["prometheusRule"]["enabled"] and vals["grafanaDashboard"]["enabled"]
