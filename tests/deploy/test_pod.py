"""The rehearsal's translation of the rendered pod into `docker run` (no Docker needed): the staging env's
chart rendered with a promotion record, each container's command line checked against its manifest."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from mlops.errors import ConfigError, RehearsalFailed
from mlops.gitops import record as rec
from mlops.gitops import rehearse, render
from mlops.gitops.pod import Pod, config_data, pod_template

from conftest import REPO

SHA = "ab" * 32
SECRETS = {"mlflow-registry": {"MLFLOW_TRACKING_URI": "http://127.0.0.1:5000"}}  # pragma: allowlist secret


@pytest.fixture(scope="module")
def manifests() -> list[dict]:
    values = render.values_from_files([REPO / rec.ENVS_DIR / "staging/values.yaml"])
    record = {
        "name": "churn-mlp",
        "version": "7",
        "uri": "models:/churn-mlp/7",
        "sha256": SHA,
        "metrics": {"roc_auc": 0.84},
        "git_sha": "0" * 40,
        "promoted_at": "2026-12-01T22:00:00Z",
        "promoted_by": "tests",
        "previous": None,
    }
    values = {**values, **record, "environment": "staging"}
    return render.render_chart(REPO / render.CHART, values, release="model-server", namespace="mlops-staging")


def pod(manifests, tmp_path: Path, template=None, secrets=SECRETS) -> tuple[Pod, dict]:
    template = template or pod_template(manifests)[1]
    return Pod(template, "p", "mlops-staging", tmp_path, secrets, config_data(manifests)), template["spec"]


def flags(cmd: list[str], flag: str) -> list[str]:
    return [cmd[i + 1] for i, a in enumerate(cmd[:-1]) if a == flag]


def test_containers_run_as_rendered(manifests, tmp_path):
    p, spec = pod(manifests, tmp_path)
    init, server = spec["initContainers"][0], spec["containers"][0]
    cmd = p.docker_run(init, "10001:10001", detach=False)
    image_at = cmd.index(init["image"])
    assert cmd[image_at + 1 :] == [str(a) for a in init["args"]]
    assert flags(cmd, "--entrypoint") == init["command"][:1]
    user = spec["securityContext"]["runAsUser"], spec["securityContext"]["runAsGroup"]
    assert flags(cmd, "--user") == [f"{user[0]}:{user[1]}"]
    assert flags(cmd, "--group-add") == [str(spec["securityContext"]["fsGroup"])]
    assert "--read-only" in cmd and flags(cmd, "--cap-drop") == ["ALL"]
    assert flags(cmd, "--security-opt") == ["no-new-privileges"] and flags(cmd, "--network") == ["host"]
    assert "MLFLOW_TRACKING_URI=http://127.0.0.1:5000" in flags(cmd, "-e")  # envFrom the registry Secret
    assert "HOME=/tmp" in flags(cmd, "-e")
    assert not any(a.startswith(("--memory", "--cpus")) for a in cmd)  # resources are not applied
    # the model emptyDir is one host directory: written by the init container, read-only for the server
    mounts = {m.split(":")[1]: m for m in flags(cmd, "-v")}
    served = p.docker_run(server, "10001:10001", detach=True)
    server_mounts = {m.split(":")[1]: m for m in flags(served, "-v")}
    assert server_mounts["/models"] == mounts["/models"] + ":ro"
    assert Path(mounts["/models"].split(":")[0]).stat().st_mode & 0o777 == 0o777
    # the one change: the wildcard bind address
    args = served[served.index(server["image"]) + 1 :]
    rendered = [str(a) for a in server["args"]]
    assert args == ["127.0.0.1" if a == "0.0.0.0" else a for a in rendered] and "0.0.0.0" in rendered
    assert p.changed == ["server: bind address 0.0.0.0 -> 127.0.0.1 (host network)"]
    assert "--model-version" in args and args[args.index("--model-version") + 1] == "7"


def test_probes_resolve_named_ports(manifests):
    server = pod_template(manifests)[1]["spec"]["containers"][0]
    port = server["ports"][0]["containerPort"]
    assert rehearse.probe_url(server, "readinessProbe") == f"http://127.0.0.1:{port}/v2/health/ready"
    assert rehearse.probe_url(server, "livenessProbe") == f"http://127.0.0.1:{port}/v2/health/live"


def test_refusals(manifests, tmp_path):
    template = copy.deepcopy(pod_template(manifests)[1])
    with pytest.raises(RehearsalFailed, match="mlflow-registry"):
        p, spec = pod(manifests, tmp_path / "a", secrets={})
        p.docker_run(spec["initContainers"][0], "10001", detach=False)
    template["spec"]["securityContext"]["runAsUser"] = 0
    p, spec = pod(manifests, tmp_path / "b", template=template)
    with pytest.raises(RehearsalFailed, match="runAsNonRoot"):
        p.docker_run(spec["containers"][0], "", detach=True)
    template["spec"]["volumes"].append({"name": "host", "hostPath": {"path": "/"}})
    with pytest.raises(RehearsalFailed, match="hostPath"):
        pod(manifests, tmp_path / "c", template=template)


def test_example_rows_follow_the_feature_spec():
    spec = [
        {"name": "tenure", "dtype": "INT64", "kind": "numeric", "min": 0, "max": 120, "nullable": False},
        {"name": "charges", "dtype": "FP64", "kind": "numeric", "min": 0, "max": 1000, "nullable": True},
        {"name": "contract", "dtype": "BYTES", "kind": "categorical", "categories": ["a", "b", "c"]},
    ]
    rows = rehearse.example_rows(spec)
    assert rows == [
        {"tenure": 0, "charges": 0.0, "contract": "a"},
        {"tenure": 60, "charges": 500.0, "contract": "c"},
    ]
    body = rehearse.infer_body(spec, rows)
    assert [(i["name"], i["datatype"], i["shape"]) for i in body["inputs"]] == [
        ("tenure", "INT64", [2]),
        ("charges", "FP64", [2]),
        ("contract", "BYTES", [2]),
    ]


def test_command_line_values():
    assert rehearse.secrets(["s/K=v=1", "s/L=", "t/M=x"]) == {"s": {"K": "v=1", "L": ""}, "t": {"M": "x"}}
    with pytest.raises(ConfigError, match="SECRET/KEY=VALUE"):
        rehearse.secrets(["s.K=v"])
    with pytest.raises(ConfigError, match="--set"):
        rehearse.pair("novalue", "--set")
