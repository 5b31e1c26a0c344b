"""Helpers of the monitoring tests: where the canonical rule, dashboard and Alertmanager files are, the
dashboard's queries with Grafana's variables filled in, rule files made of expressions (so promtool can
check any PromQL), and the metric names the project really exports."""

from __future__ import annotations

import json
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from conftest import REPO, tool

CHART_FILES = REPO / "charts/model-server/files/monitoring"
RULES = CHART_FILES / "mlops.rules.yaml"
DASHBOARD = CHART_FILES / "mlops-dashboard.json"
MONITORING = REPO / "monitoring"
RULES_LINK = MONITORING / "rules/mlops.rules.yaml"
DASHBOARD_LINK = MONITORING / "grafana/mlops-dashboard.json"
ALERTMANAGER = MONITORING / "alertmanager/alertmanager.yml"
PROMETHEUS = MONITORING / "prometheus/prometheus.yml"
UNIT_TESTS = sorted((MONITORING / "tests").glob("*.test.yaml"))

# Grafana's variables as the dashboard's "All" selection fills them in (allValue ".*" matches a missing
# label too, as in a plain Prometheus without namespace labels); $__rate_interval as Grafana computes it
# for a 15 s scrape interval (4 x the interval = 1m)
VARIABLES = {"namespace": ".*", "job": ".*", "model": ".*", "__rate_interval": "1m"}


@dataclass(frozen=True)
class Query:
    """One target of one dashboard panel."""

    panel: str
    ref: str
    raw: str  # as in the JSON
    expr: str  # variables filled in
    legend: str

    @property
    def legend_labels(self) -> set[str]:
        """The labels the legend shows: every series the query returns must carry them."""
        return set(re.findall(r"\{\{\s*(\w+)\s*\}\}", self.legend))

    @property
    def name(self) -> str:
        return f"{self.panel} [{self.ref}]"


def fill(expr: str, variables: dict[str, str] = VARIABLES) -> str:
    """Grafana's variable interpolation ($name and ${name}); AssertionError on an unknown variable."""

    def one(m: re.Match) -> str:
        name = m.group(1) or m.group(2)
        assert name in variables, f"unknown dashboard variable ${name} in {expr!r}"
        return variables[name]

    return re.sub(r"\$\{(\w+)\}|\$(\w+)", one, expr)


def load_dashboard(path: Path = DASHBOARD) -> dict[str, Any]:
    return json.loads(path.read_text())


def panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    """Every panel, the ones inside collapsed rows included."""
    out = []
    for p in dashboard["panels"]:
        out.append(p)
        out.extend(p.get("panels", []))
    return out


def dashboard_queries(dashboard: dict[str, Any] | None = None) -> list[Query]:
    """Every PromQL expression of the dashboard's panels."""
    dashboard = dashboard or load_dashboard()
    return [
        Query(p["title"], t["refId"], t["expr"], fill(t["expr"]), t.get("legendFormat", ""))
        for p in panels(dashboard)
        for t in p.get("targets", [])
    ]


def variable_queries(dashboard: dict[str, Any] | None = None) -> list[tuple[str, str, str]]:
    """(variable, series selector, label) of each `label_values(selector, label)` template variable."""
    dashboard = dashboard or load_dashboard()
    out = []
    for var in dashboard["templating"]["list"]:
        if var["type"] != "query":
            continue
        query = var["query"]["query"] if isinstance(var["query"], dict) else var["query"]
        m = re.fullmatch(r"label_values\((.+),\s*(\w+)\)", query.strip())
        assert m, f"variable {var['name']}: expected label_values(selector, label), got {query!r}"
        out.append((var["name"], fill(m.group(1)), m.group(2)))
    return out


def load_rules(path: Path = RULES) -> dict[str, Any]:
    return yaml.safe_load(path.read_text())


def all_rules(rules: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    rules = rules or load_rules()
    return [r for g in rules["groups"] for r in g["rules"]]


def recorded_names(rules: dict[str, Any] | None = None) -> set[str]:
    return {r["record"] for r in all_rules(rules) if "record" in r}


def alert_names(rules: dict[str, Any] | None = None) -> list[str]:
    return [r["alert"] for r in all_rules(rules) if "alert" in r]


def rule_file(exprs: dict[str, str]) -> str:
    """A rule file recording each expression under its name (promtool then parses every one)."""
    return yaml.safe_dump(
        {"groups": [{"name": "checked", "rules": [{"record": n, "expr": e} for n, e in exprs.items()]}]},
        sort_keys=False,
    )


def recording_name(i: int) -> str:
    return f"dashboard:query_{i}"


def promtool(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([tool("promtool"), *args], cwd=cwd, capture_output=True, text=True, timeout=120)


def amtool(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([tool("amtool"), *args], capture_output=True, text=True, timeout=60)


def server_metric_names() -> set[str]:
    """Series names the model server exposes for any task (its Metrics registry, counters with _total,
    histograms with _bucket/_sum/_count)."""
    from mlops.serve.prometheus import Metrics

    names = set()
    metrics = Metrics()
    metrics.track_values((0.0,))  # the regression model's histogram exists once such a model is loaded
    for family in metrics._own.collect():
        if family.type == "counter":
            names.add(family.name + "_total")
        elif family.type == "histogram":
            names |= {family.name + s for s in ("_bucket", "_sum", "_count")}
        else:
            names.add(family.name)
    return names


def drift_metric_names() -> set[str]:
    """Gauge names the drift job pushes (read from mlops.monitor.export, which defines them)."""
    from mlops.monitor import export

    return set(re.findall(r'"(mlops_drift_\w+)"', Path(export.__file__).read_text()))


def metric_names_in(expr: str) -> set[str]:
    """The mlops series names an expression selects (recording rule names included)."""
    return set(re.findall(r"\b(mlops[a-z0-9_:]*)", expr))
