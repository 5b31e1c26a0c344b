"""The Helm chart charts/model-server, rendered for real (helm-python-sdk: Helm's Go SDK in-process):
lint, every ci/ scenario and every environment validated strictly (core kinds with kubernetes-validate for
the lowest and highest supported Kubernetes, custom resources against their CRD schemas), policy (the
restricted Pod Security Standard, OIP probes, resources, pinned images, stable selectors), the strict
values schema, deterministic rendering, and container commands the real CLI accepts.
"""

from __future__ import annotations

import copy
import hashlib
import json
import re
import shutil
from pathlib import Path

import helm_python as helm
import pytest
import yaml

from mlops import cli
from mlops.errors import ConfigError
from mlops.gitops import render

from .k8s import CHART, REPO, by_kind, pod_spec, record, scratch_repo, validate_all, workloads, write_record

SCENARIOS = sorted((CHART / "ci").glob("*-values.yaml"))
ENVS = sorted(p.name for p in (REPO / "deploy" / "envs").iterdir() if p.is_dir())
SHA = "ab" * 32


def values(**over) -> dict:
    """Minimal user values: the registry Secret and a promotion record."""
    base = {
        "environment": "test",
        "registry": {"secretName": "mlflow-registry"},  # pragma: allowlist secret
        **record("test", "5", SHA),
    }
    return render.merge_values(base, over)


def rendered(vals: dict, chart: Path = CHART) -> list[dict]:
    return render.render_chart(chart, vals, release="model-server", namespace="mlops-test")


def scenario(path: Path) -> list[dict]:
    return rendered(render.values_from_files([path]))


# ---------------------------------------------------------------- lint and validation
def test_scenarios_exist():
    assert {p.name for p in SCENARIOS} >= {
        "minimal-values.yaml",
        "production-values.yaml",
        "rollout-values.yaml",
        "autoscaling-values.yaml",
    }


@pytest.mark.parametrize("path", SCENARIOS, ids=lambda p: p.stem)
def test_lint_strict(path):
    report = helm.lint(str(CHART), render.values_from_files([path]), strict=True)
    problems = [m for m in report["messages"] if m["severity"] >= 2] + list(report.get("errors") or [])
    assert not problems, problems


@pytest.mark.parametrize("path", SCENARIOS, ids=lambda p: p.stem)
def test_scenario_renders_and_validates(path):
    validate_all(scenario(path))


@pytest.mark.parametrize("env", ENVS)
def test_env_renders_and_validates(env, tmp_path):
    """Each environment as its Argo CD Application renders it, with a promotion record in place."""
    repo = scratch_repo(tmp_path)
    if not (repo / "deploy/envs" / env / "model.yaml").exists():
        write_record(repo, env, record(env, "4"))
    objects = render.render_env(env, repo)
    validate_all(objects)
    env_dir = repo / "deploy/envs" / env
    vals = render.values_from_files([env_dir / "values.yaml", env_dir / "model.yaml"])
    report = helm.lint(str(CHART), {**vals, "environment": env}, strict=True, kube_version="v1.29.0")
    assert not [m for m in report["messages"] if m["severity"] >= 2], report["messages"]
    rec = yaml.safe_load((repo / "deploy/envs" / env / "model.yaml").read_text())
    args = pod_spec(objects)["initContainers"][0]["args"]
    assert args[args.index("--name") + 1] == rec["name"]
    assert args[args.index("--version") + 1] == str(rec["version"])


def test_kinds_per_scenario():
    kinds = {p.stem: sorted({o["kind"] for o in scenario(p)}) for p in SCENARIOS}
    assert kinds["minimal-values"] == ["Deployment", "NetworkPolicy", "Service", "ServiceAccount"]
    assert kinds["production-values"] == [
        "Deployment",
        "NetworkPolicy",
        "PodDisruptionBudget",
        "PrometheusRule",
        "Service",
        "ServiceAccount",
        "ServiceMonitor",
    ]
    assert "Rollout" in kinds["rollout-values"] and "AnalysisTemplate" in kinds["rollout-values"]
    assert "Deployment" not in kinds["rollout-values"]
    assert "HorizontalPodAutoscaler" in kinds["autoscaling-values"]


def test_a_violation_is_caught():
    """The validation is not vacuous: an unknown field in a rendered Deployment fails strict validation."""
    objects = rendered(values())
    broken = copy.deepcopy(objects)
    workloads(broken)[0]["spec"]["template"]["spec"]["containers"][0]["livenessProbe"]["httpGett"] = {}
    with pytest.raises(AssertionError, match="httpGett"):
        validate_all(broken)
    rollout = copy.deepcopy(scenario(CHART / "ci" / "rollout-values.yaml"))
    by_kind(rollout, "Rollout")[0]["spec"]["strategy"]["canary"]["steps"][0] = {"setWeigth": 20}
    with pytest.raises(AssertionError, match="setWeigth"):
        validate_all(rollout)


# ---------------------------------------------------------------- policy
ALL_RENDERS = [pytest.param(p, id=p.stem) for p in SCENARIOS]


@pytest.mark.parametrize("path", ALL_RENDERS)
def test_restricted_pod_security(path):
    spec = pod_spec(scenario(path))
    assert spec["automountServiceAccountToken"] is False
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["runAsUser"] > 0
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert "hostNetwork" not in spec and "hostPID" not in spec and "hostIPC" not in spec
    mounts_needed = {"/models", "/tmp"}
    volumes = {v["name"]: v for v in spec["volumes"]}
    for c in spec["initContainers"] + spec["containers"]:
        sc = c["securityContext"]
        assert sc["allowPrivilegeEscalation"] is False, c["name"]
        assert sc["capabilities"] == {"drop": ["ALL"]}, c["name"]
        assert sc["readOnlyRootFilesystem"] is True, c["name"]
        assert sc.get("privileged") is not True
        writable = {m["mountPath"] for m in c["volumeMounts"]}
        assert writable >= mounts_needed, c["name"]
        for m in c["volumeMounts"]:
            assert "emptyDir" in volumes[m["name"]], m  # writes only to emptyDirs
        assert not c.get("ports") or all("hostPort" not in p for p in c["ports"])


@pytest.mark.parametrize("path", ALL_RENDERS)
def test_probes_on_oip_health_paths(path):
    (server,) = pod_spec(scenario(path))["containers"]
    assert server["startupProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert server["readinessProbe"]["httpGet"]["path"] == "/v2/health/ready"
    assert server["livenessProbe"]["httpGet"]["path"] == "/v2/health/live"
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert server[probe]["httpGet"]["port"] == "http"


@pytest.mark.parametrize("path", ALL_RENDERS)
def test_resources_and_pinned_images(path):
    spec = pod_spec(scenario(path))
    for c in spec["initContainers"] + spec["containers"]:
        for kind in ("requests", "limits"):
            assert set(c["resources"][kind]) >= {"cpu", "memory"}, (c["name"], kind)
        image = c["image"]
        assert re.search(r"(:[\w][\w.-]*|@sha256:[0-9a-f]{64})$", image), image
        assert not image.endswith(":latest"), image


def test_digest_wins_over_tag_and_tag_defaults_to_app_version():
    app_version = yaml.safe_load((CHART / "Chart.yaml").read_text())["appVersion"]
    spec = pod_spec(rendered(values()))
    assert spec["containers"][0]["image"] == f"ghcr.io/example-org/mlops-serve:{app_version}"
    digest = "sha256:" + "c" * 64
    spec = pod_spec(rendered(values(image={"tag": "1.2.3", "digest": digest})))
    assert spec["containers"][0]["image"] == f"ghcr.io/example-org/mlops-serve@{digest}"


RECORD_IMAGES = {
    "server": "registry.example:5000/team/mlops-serve@sha256:" + "a" * 64,
    "fetch": "registry.example:5000/team/mlops-fetch@sha256:" + "b" * 64,
    "monitor": "registry.example:5000/team/mlops-monitor@sha256:" + "c" * 64,
    "pipeline": "registry.example:5000/team/mlops-pipeline@sha256:" + "d" * 64,
}


def _images(objects: list[dict]) -> dict[str, str]:
    """container name -> image over every workload (server, fetch-model, drift, retrain trigger)."""
    found = {}
    for obj in objects:
        spec = obj.get("spec", {})
        pod = spec.get("jobTemplate", {}).get("spec", spec).get("template", {}).get("spec")
        for c in (pod or {}).get("initContainers", []) + (pod or {}).get("containers", []):
            found[f"{obj['kind']}/{c['name']}"] = c["image"]
    return found


@pytest.mark.parametrize("env", ENVS)
def test_env_deploys_the_record_images_by_digest(env, tmp_path):
    """The record's images (promote writes the digests CI built with the version) win over the env's
    values.yaml images; a record without them (a version registered locally) runs the values' images."""
    repo = scratch_repo(tmp_path)
    write_record(repo, env, record(env, "4", images=RECORD_IMAGES))
    objects = render.render_env(env, repo)
    validate_all(objects)
    images = _images(objects)
    spec = pod_spec(objects)
    assert spec["containers"][0]["image"] == RECORD_IMAGES["server"]
    assert spec["initContainers"][0]["image"] == RECORD_IMAGES["fetch"]
    others = {v for k, v in images.items() if "server" not in k.lower() and "fetch" not in k.lower()}
    assert others <= {RECORD_IMAGES["monitor"]}, images  # the drift job and the retrain trigger
    assert set(images.values()) <= set(RECORD_IMAGES.values()), images

    write_record(repo, env, record(env, "4"))  # images: {}
    values_yaml = yaml.safe_load((repo / "deploy/envs" / env / "values.yaml").read_text())
    spec = pod_spec(render.render_env(env, repo))
    image = values_yaml["image"]
    assert spec["containers"][0]["image"] == f"{image['repository']}:{image['tag']}"


def test_record_images_must_be_digests():
    with pytest.raises(ConfigError, match="images"):
        rendered(values(images={"server": "ghcr.io/example-org/mlops-serve:1.0"}))


@pytest.mark.parametrize("key", ["image", "fetchImage"])
def test_latest_is_refused(key):
    """Refused by the schema (and by the template when a user skips schema validation)."""
    with pytest.raises(ConfigError, match=f"at '/{key}/tag': 'not' failed"):
        rendered(values(**{key: {"tag": "latest"}}))


def test_selector_labels_stable_across_versions(tmp_path):
    """Deployment selectors are immutable: they must not change with the chart, app or model version."""
    chart = tmp_path / "model-server"
    shutil.copytree(CHART, chart)
    meta = yaml.safe_load((chart / "Chart.yaml").read_text())
    meta.update(version="9.9.9", appVersion="9.9.9")
    (chart / "Chart.yaml").write_text(yaml.safe_dump(meta))
    before = rendered(values())
    after = rendered(values(**record("test", "6", "cd" * 32)), chart)

    def selectors(objects):
        out = {}
        for o in objects:
            spec = o.get("spec", {})
            sel = spec.get("selector")
            if o["kind"] == "Service":
                out[o["kind"]] = sel
            elif isinstance(sel, dict):
                out[o["kind"]] = sel["matchLabels"]
            if o["kind"] == "NetworkPolicy":
                out[o["kind"]] = spec["podSelector"]["matchLabels"]
        return out

    assert selectors(before) == selectors(after)
    assert selectors(before)["Deployment"] == {
        "app.kubernetes.io/name": "model-server",
        "app.kubernetes.io/instance": "model-server",
    }
    pod_labels = workloads(after)[0]["spec"]["template"]["metadata"]["labels"]
    assert set(selectors(after)["Deployment"].items()) <= set(pod_labels.items())


# ---------------------------------------------------------------- behaviour of the values
def test_deterministic_rendering():
    assert rendered(values()) == rendered(values())
    assert render.render_notes(CHART, values(), release="a", namespace="b") == render.render_notes(
        CHART, values(), release="a", namespace="b"
    )


def test_record_checksum_rolls_pods_on_any_record_change():
    def checksum(vals):
        return workloads(rendered(vals))[0]["spec"]["template"]["metadata"]["annotations"][
            "checksum/model-record"
        ]

    base = checksum(values())
    assert checksum(values(version="6")) != base
    assert checksum(values(sha256="ef" * 32)) != base
    assert checksum(values(promoted_by="someone-else")) != base
    assert checksum(values(replicaCount=5)) == base  # not a record change
    rec = {k: v for k, v in values().items() if k in record("x")}
    merged = render.merge_values(yaml.safe_load((CHART / "values.yaml").read_text()), rec)
    expected = {k: merged[k] for k in record("x") if k in merged}
    assert (
        base
        == hashlib.sha256(json.dumps(expected, sort_keys=True, separators=(",", ":")).encode()).hexdigest()
    )


def test_containers_run_the_real_cli():
    """The rendered commands parse with the real `mlops` argument parser (the rehearsal runs them)."""
    spec = pod_spec(rendered(values()))
    (init,) = spec["initContainers"]
    (server,) = spec["containers"]
    assert init["command"] == ["mlops"] and server["command"] == ["mlops"]
    fetch = cli.parse_args(init["args"])
    assert (fetch.command, fetch.name, fetch.version, str(fetch.dest)) == (
        "fetch-model",
        "churn-mlp",
        "5",
        "/models",
    )
    serve = cli.parse_args(server["args"])
    assert (serve.command, str(serve.model_dir), serve.host, serve.model_version) == (
        "serve",
        "/models",
        "0.0.0.0",
        "5",
    )
    assert serve.port == server["ports"][0]["containerPort"]
    assert {m["mountPath"]: m.get("readOnly", False) for m in server["volumeMounts"]}["/models"] is True
    assert init["envFrom"] == [{"secretRef": {"name": "mlflow-registry"}}]
    assert all(
        "value" not in e or not re.search(r"://|password|token", e["value"], re.I) for e in init["env"]
    )


def test_autoscaling_omits_replicas_and_pdb_only_when_satisfiable():
    plain = rendered(values(replicaCount=2))
    assert workloads(plain)[0]["spec"]["replicas"] == 2
    assert by_kind(plain, "PodDisruptionBudget") and not by_kind(plain, "HorizontalPodAutoscaler")
    assert not by_kind(rendered(values(replicaCount=1)), "PodDisruptionBudget")
    hpa = rendered(values(autoscaling={"enabled": True, "minReplicas": 3, "maxReplicas": 5}))
    assert "replicas" not in workloads(hpa)[0]["spec"]
    (h,) = by_kind(hpa, "HorizontalPodAutoscaler")
    assert (h["spec"]["minReplicas"], h["spec"]["scaleTargetRef"]["kind"]) == (3, "Deployment")
    assert by_kind(hpa, "PodDisruptionBudget")
    single = rendered(
        values(replicaCount=5, autoscaling={"enabled": True, "minReplicas": 1, "maxReplicas": 5})
    )
    assert not by_kind(single, "PodDisruptionBudget")
    with pytest.raises(ConfigError, match="minReplicas"):
        rendered(values(autoscaling={"enabled": True, "minReplicas": 6, "maxReplicas": 5}))


def test_rollout_canary_with_analysis_on_server_metrics():
    objects = scenario(CHART / "ci" / "rollout-values.yaml")
    (rollout,) = by_kind(objects, "Rollout")
    (template,) = by_kind(objects, "AnalysisTemplate")
    canary = rollout["spec"]["strategy"]["canary"]
    assert canary["analysis"]["templates"] == [{"templateName": template["metadata"]["name"]}]
    assert canary["analysis"]["args"] == [
        {"name": "canary-hash", "valueFrom": {"podTemplateHashValue": "Latest"}}
    ]
    metrics = {m["name"]: m for m in template["spec"]["metrics"]}
    assert set(metrics) == {"success-ratio", "latency-p95"}
    ratio = metrics["success-ratio"]["provider"]["prometheus"]["query"]
    assert "mlops_serve_requests_total" in ratio and 'status!~"5.."' in ratio
    assert 'rollouts_pod_template_hash="{{args.canary-hash}}"' in ratio
    p95 = metrics["latency-p95"]["provider"]["prometheus"]["query"]
    assert p95.startswith("histogram_quantile(0.95,") and "mlops_serve_request_duration_seconds_bucket" in p95
    assert metrics["success-ratio"]["successCondition"].endswith(">= 0.995")
    assert metrics["latency-p95"]["successCondition"].endswith("<= 0.1")
    for m in metrics.values():  # failed measurements beyond failureLimit abort the rollout
        assert m["failureLimit"] == 2 and m["count"] == 10
    (monitor,) = by_kind(objects, "ServiceMonitor")
    assert "rollouts-pod-template-hash" in monitor["spec"]["podTargetLabels"]
    hpa = rendered(
        render.merge_values(
            render.values_from_files([CHART / "ci/rollout-values.yaml"]), {"autoscaling": {"enabled": True}}
        )
    )
    assert by_kind(hpa, "HorizontalPodAutoscaler")[0]["spec"]["scaleTargetRef"]["kind"] == "Rollout"
    with pytest.raises(ConfigError, match="serviceMonitor.enabled"):
        rendered(values(rollout={"enabled": True}))


def test_missing_record_fails_with_the_file_named():
    vals = values()
    for key in ("name", "version", "sha256"):
        vals.pop(key)
    vals["environment"] = "production"
    with pytest.raises(
        ConfigError, match=r"deploy/envs/production/model\.yaml is missing or lacks name, version, sha256"
    ):
        rendered(vals)


def test_registry_secret_required():
    vals = values()
    vals["registry"] = {"secretName": ""}
    with pytest.raises(ConfigError, match="registry.secretName"):
        rendered(vals)


@pytest.mark.parametrize(
    "over, field",
    [
        ({"replicas": 3}, "replicas"),  # unknown top-level key
        ({"image": {"tagg": "1"}}, "tagg"),
        (
            {"registry": {"secretName": "s", "uri": "http://mlflow:5000"}},
            "uri",
        ),  # no inline registry settings
        ({"resources": {"server": {"requests": {"cpu": "1", "memory": "1Gi", "gpu": 1}}}}, "gpu"),
        ({"sha256": "not-a-sha"}, "sha256"),
        ({"image": {"digest": "sha256:short"}}, "digest"),
        ({"podSecurityContext": {"runAsUser": 0}}, "runAsUser"),
    ],
)
def test_schema_is_strict(over, field):
    with pytest.raises(ConfigError, match=field):
        rendered(values(**over))


def _leaf_keys(node: dict, prefix: str = "") -> set[str]:
    keys = set()
    for k, v in node.items():
        keys.add(prefix + k)
        if isinstance(v, dict) and v:
            keys |= _leaf_keys(v, prefix + k + ".")
    return keys


def _schema_keys(schema: dict, defs: dict, prefix: str = "") -> set[str]:
    keys = set()
    for k, v in schema.get("properties", {}).items():
        if "$ref" in v:
            v = defs[v["$ref"].split("/")[-1]]
        keys.add(prefix + k)
        if v.get("additionalProperties") is False:
            keys |= _schema_keys(v, defs, prefix + k + ".")
    return keys


def test_every_value_in_schema_and_documented():
    defaults = yaml.safe_load((CHART / "values.yaml").read_text())
    schema = json.loads((CHART / "values.schema.json").read_text())
    assert schema["additionalProperties"] is False
    declared = _schema_keys(schema, schema["definitions"])
    in_values = {k for k in _leaf_keys(defaults) if k.count(".") == 0 or k.rsplit(".", 1)[0] in declared}
    # every key of values.yaml is in the schema and every schema key has a default in values.yaml
    assert in_values - declared == set()
    assert {k for k in declared if not k.startswith(("resources.", "probes."))} - _leaf_keys(
        defaults
    ) == set()
    # documented where declared: a comment on the line before each key, or on the line itself (the keys
    # of resources and probes are Kubernetes fields, documented once at their parent)
    stack: list[tuple[int, str]] = []
    undocumented = []
    lines = (CHART / "values.yaml").read_text().splitlines()
    for i, line in enumerate(lines):
        m = re.match(r"^(\s*)([A-Za-z_]\w*):", line)
        if not m:
            continue
        indent = len(m.group(1))
        stack = [(n, k) for n, k in stack if n < indent] + [(indent, m.group(2))]
        path = ".".join(k for _, k in stack)
        if path not in declared or path.startswith(("resources.", "probes.")):
            continue
        if not (lines[i - 1].strip().startswith("#") or "#" in line.split(":", 1)[1]):
            undocumented.append(path)
    assert not undocumented, f"values.yaml keys without a comment: {undocumented}"


def test_notes_render():
    notes = render.render_notes(CHART, values(), release="model-server", namespace="mlops-test")
    assert "model churn-mlp version 5" in notes
    assert "kubectl -n mlops-test port-forward svc/model-server" in notes
