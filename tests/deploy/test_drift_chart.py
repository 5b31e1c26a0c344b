"""The chart's monitoring workloads, rendered for real: the drift CronJob (ci/drift-values.yaml; the
scenario tests of test_chart.py also lint and validate it strictly) and the retrain webhook receiver.
They run the real CLI's arguments, read the same prediction log location the server writes, fetch the
deployed version like the server does, and run under the same restricted security context."""

from __future__ import annotations

import copy

import pytest
import yaml

from mlops import cli
from mlops.errors import ConfigError, DriftDetected
from mlops.gitops import render

from .k8s import CHART, by_kind, validate_all

SCENARIO = CHART / "ci" / "drift-values.yaml"


def rendered(**over) -> list[dict]:
    vals = render.merge_values(render.values_from_files([SCENARIO]), over)
    return render.render_chart(CHART, vals, release="churn", namespace="mlops-test")


def server_pod(objects: list[dict]) -> dict:
    (deployment,) = [
        o for o in by_kind(objects, "Deployment") if o["metadata"]["name"] == "churn-model-server"
    ]
    return deployment["spec"]["template"]


def drift_pod(objects: list[dict]) -> dict:
    (cronjob,) = by_kind(objects, "CronJob")
    return cronjob["spec"]["jobTemplate"]["spec"]["template"]


def test_the_cronjob_reads_what_the_server_writes_with_the_real_cli():
    objects = rendered()
    (server,) = server_pod(objects)["spec"]["containers"]
    serve = cli.parse_args(server["args"])
    spec = drift_pod(objects)["spec"]
    (drift,) = spec["containers"]
    assert drift["command"] == ["mlops"]
    args = cli.parse_args(drift["args"])
    assert args.command == "drift" and args.trigger is True
    assert args.log_dir == serve.prediction_log_dir == "s3://ml-prediction-logs/churn/ci"
    assert serve.prediction_log_rate == 0.1
    assert args.reference == "/model/reference.parquet" and str(args.params) == "/app/params.yaml"
    assert args.window_hours == 24 and args.push_url == "http://prometheus-pushgateway.monitoring.svc:9091"
    assert drift["image"] == "registry.example.com/ml/mlops-monitor:0.1.0"
    # the same object-store credentials for the writer and the reader
    assert {"secretRef": {"name": "prediction-log-store"}} in server["envFrom"]
    assert {"secretRef": {"name": "prediction-log-store"}} in drift["envFrom"]


def test_the_cronjob_fetches_the_deployed_version_like_the_server():
    objects = rendered()
    (server_init,) = server_pod(objects)["spec"]["initContainers"]
    (init,) = drift_pod(objects)["spec"]["initContainers"]
    fetch = cli.parse_args(init["args"])
    assert (fetch.command, fetch.name, fetch.version, str(fetch.dest)) == (
        "fetch-model",
        "churn-mlp",
        "4",
        "/model",
    )
    assert fetch.sha256 == "0" * 63 + "4"
    # the same container as the server's, only the mount differs
    same = copy.deepcopy(server_init)
    same["args"][same["args"].index("--dest") + 1] = "/model"
    same["volumeMounts"][0]["mountPath"] = "/model"
    assert init == same
    (drift,) = drift_pod(objects)["spec"]["containers"]
    assert {m["mountPath"]: m.get("readOnly", False) for m in drift["volumeMounts"]} == {
        "/model": True,
        "/tmp": False,
    }
    assert (
        drift_pod(objects)["metadata"]["annotations"]["checksum/model-record"]
        == (server_pod(objects)["metadata"]["annotations"]["checksum/model-record"])
    )


def test_the_cronjob_runs_under_the_servers_restricted_security_context():
    objects = rendered()
    server, job = server_pod(objects)["spec"], drift_pod(objects)["spec"]
    assert job["securityContext"] == server["securityContext"]
    assert (
        job["automountServiceAccountToken"] is False
        and job["serviceAccountName"] == server["serviceAccountName"]
    )
    assert job["restartPolicy"] == "Never"
    for c in job["initContainers"] + job["containers"]:
        assert c["securityContext"] == server["containers"][0]["securityContext"], c["name"]
        assert set(c["resources"]["limits"]) >= {"cpu", "memory"}
    assert all("emptyDir" in v for v in job["volumes"])


def test_drift_and_config_errors_fail_the_job_without_retries():
    (cronjob,) = by_kind(rendered(), "CronJob")
    assert cronjob["spec"]["concurrencyPolicy"] == "Forbid"
    (rule,) = cronjob["spec"]["jobTemplate"]["spec"]["podFailurePolicy"]["rules"]
    assert rule["action"] == "FailJob" and rule["onExitCodes"]["containerName"] == "drift"
    assert set(rule["onExitCodes"]["values"]) == {DriftDetected.exit_code, ConfigError.exit_code}


def test_monitoring_pods_are_not_selected_by_the_servers_service_pdb_or_policy():
    objects = rendered(retrainTrigger={"enabled": True})
    selectors = [
        o["spec"]["selector"]
        for o in by_kind(objects, "Service")
        if o["metadata"]["name"] == "churn-model-server"
    ]
    selectors += [o["spec"]["selector"]["matchLabels"] for o in by_kind(objects, "PodDisruptionBudget")]
    selectors += [o["spec"]["podSelector"]["matchLabels"] for o in by_kind(objects, "NetworkPolicy")]
    (receiver,) = [
        o for o in by_kind(objects, "Deployment") if o["metadata"]["name"].endswith("-retrain-trigger")
    ]
    for labels in (
        drift_pod(objects)["metadata"]["labels"],
        receiver["spec"]["template"]["metadata"]["labels"],
    ):
        for selector in selectors:
            assert not selector.items() <= labels.items(), (selector, labels)
    assert selectors[0].items() <= server_pod(objects)["metadata"]["labels"].items()


def test_trigger_settings_come_from_the_secret_and_plain_env():
    (drift,) = drift_pod(rendered())["spec"]["containers"]
    assert {"secretRef": {"name": "retrain-trigger"}} in drift["envFrom"]
    env = {e["name"]: e["value"] for e in drift["env"]}
    assert env == {"HOME": "/tmp", "MLOPS_FORGE": "github", "GITHUB_REPOSITORY": "example-org/churn"}
    (quiet,) = drift_pod(rendered(drift={"trigger": False}))["spec"]["containers"]
    assert (
        "--trigger" not in quiet["args"]
        and {"secretRef": {"name": "retrain-trigger"}} not in quiet["envFrom"]
    )
    assert [e["name"] for e in quiet["env"]] == ["HOME"]


@pytest.mark.parametrize(
    ("over", "message"),
    [
        ({"predictionLog": {"dir": ""}}, "predictionLog.dir"),
        ({"retrainTrigger": {"secretName": ""}}, "retrainTrigger.secretName"),
        ({"retrainTrigger": {"env": {"MLOPS_RETRAIN_TOKEN": "x"}}}, "MLOPS_RETRAIN_TOKEN"),  # never inline
        ({"drift": {"schedule": "hourly"}}, "schedule"),
        ({"drift": {"image": {"tag": "latest"}}}, "drift/image/tag"),
    ],
)
def test_misconfiguration_fails_the_render_naming_the_value(over, message):
    with pytest.raises(ConfigError, match=message):
        rendered(**over)


def test_receiver_deployment_and_service():
    objects = rendered(retrainTrigger={"enabled": True})
    validate_all(objects)
    (receiver,) = [
        o
        for o in by_kind(objects, "Deployment")
        if o["metadata"]["name"] == "churn-model-server-retrain-trigger"
    ]
    spec = receiver["spec"]["template"]["spec"]
    (c,) = spec["containers"]
    args = cli.parse_args(c["args"])
    assert (args.command, args.listen, args.reason) == ("trigger-retrain", "0.0.0.0:9095", None)
    assert c["readinessProbe"]["httpGet"] == {"path": "/healthz", "port": "http"}
    assert c["envFrom"] == [{"secretRef": {"name": "retrain-trigger"}}]
    assert spec["securityContext"] == server_pod(objects)["spec"]["securityContext"]
    assert (
        c["securityContext"]["readOnlyRootFilesystem"] is True
        and spec["automountServiceAccountToken"] is False
    )
    (service,) = [
        o for o in by_kind(objects, "Service") if o["metadata"]["name"] == receiver["metadata"]["name"]
    ]
    assert service["spec"]["selector"].items() <= receiver["spec"]["template"]["metadata"]["labels"].items()
    assert service["spec"]["ports"][0]["port"] == 9095


def test_off_by_default():
    vals = yaml.safe_load((CHART / "ci" / "minimal-values.yaml").read_text())
    kinds = {o["kind"] for o in render.render_chart(CHART, vals, release="churn", namespace="t")}
    assert "CronJob" not in kinds
    server = [
        o
        for o in render.render_chart(CHART, vals, release="churn", namespace="t")
        if o["kind"] == "Deployment"
    ]
    (container,) = server[0]["spec"]["template"]["spec"]["containers"]
    assert "--prediction-log-dir" not in container["args"] and "envFrom" not in container
