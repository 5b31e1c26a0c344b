"""mlops trigger-retrain: the request each CI API gets, the cooldown, the errors, and the Alertmanager
receiver end to end (a real `mlops trigger-retrain --listen` process, real HTTP POSTs). GitHub, GitLab
and Jenkins cannot run here: their APIs are a labelled test double (ci_double.py)."""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml

from mlops import cli
from mlops.errors import ConfigError
from mlops.monitor.trigger import TriggerFailed, trigger_retrain
from mlops.params.retrain import RetrainParams

from .ci_double import JENKINS_CRUMB, CiDouble, running
from conftest import FIXTURE_PARAMS, free_port

TOKEN = "s3cr3t-token"


def retrain(provider: str, **changes) -> RetrainParams:
    """The fixture's `retrain` section for one provider, with changes."""
    data = yaml.safe_load(FIXTURE_PARAMS.read_text())["retrain"]
    data.update(provider=provider, **changes)
    return RetrainParams.model_validate(data)


def ci_env(ci: CiDouble, provider: str, **extra: str) -> dict[str, str]:
    """The environment a CronJob (or a CI job) gives the trigger, pointing at the double."""
    env = {"MLOPS_RETRAIN_TOKEN": TOKEN, **extra}
    if provider == "github":
        env.update(GITHUB_API_URL=f"{ci.url}/github", GITHUB_REPOSITORY="acme/churn")
    elif provider == "gitlab":
        env.update(
            CI_API_V4_URL=f"{ci.url}/gitlab/api/v4", CI_PROJECT_ID="ml/churn", GITLAB_TOKEN=ci.api_token
        )
    else:
        env.update(JOB_URL=f"{ci.url}/jenkins/job/mlops/job/main/", JENKINS_USER=ci.jenkins_user)
    return env


def posts(ci: CiDouble) -> list:
    return [r for r in ci.requests if r.method == "POST"]


# ------------------------------------------------------------------ request shape per provider
def test_github_workflow_dispatch_request_and_cooldown():
    with running() as ci:
        env = ci_env(ci, "github")
        first = trigger_retrain(retrain("github"), "drift on tenure, monthly_charges", env)
        assert first.triggered and first.provider == "github"
        assert first.url == "https://github.com/acme/churn/actions/workflows/retrain.yml"
        (post,) = posts(ci)
        assert post.path == "/github/repos/acme/churn/actions/workflows/retrain.yml/dispatches"
        assert post.headers["authorization"] == f"Bearer {TOKEN}"
        assert post.json() == {"ref": "main", "inputs": {"reason": "drift on tenure, monthly_charges"}}
        # the CI was asked first, for runs of the workflow within the window
        lookup = ci.requests[0]
        assert lookup.method == "GET" and lookup.path.endswith("/actions/workflows/retrain.yml/runs")
        assert lookup.first("created").startswith(">=")

        second = trigger_retrain(retrain("github"), "drift again", env)
        assert not second.triggered
        assert "within the 24h cooldown" in second.message and second.url == ci.runs[0]["url"]
        assert len(ci.started("github")) == 1 and len(posts(ci)) == 1


def test_gitlab_pipeline_trigger_request_and_cooldown():
    with running() as ci:
        env = ci_env(ci, "gitlab")
        first = trigger_retrain(retrain("gitlab"), "alert MlopsDriftDetected", env)
        assert first.triggered and first.url == ci.runs[0]["url"]  # the new pipeline's web_url
        (post,) = posts(ci)
        assert post.path == "/gitlab/api/v4/projects/ml%2Fchurn/trigger/pipeline"
        assert "private-token" not in post.headers  # the trigger token authenticates in the body
        assert post.json() == {
            "token": TOKEN,
            "ref": "main",
            "variables": {"MLOPS_RETRAIN_REASON": "alert MlopsDriftDetected"},
        }
        lookup = [r for r in ci.requests if r.method == "GET"][0]
        assert lookup.path == "/gitlab/api/v4/projects/ml%2Fchurn/pipelines"
        assert lookup.headers["private-token"] == ci.api_token and lookup.first("source") == "trigger"

        second = trigger_retrain(retrain("gitlab"), "alert again", env)
        assert not second.triggered and "gitlab retrain run started at" in second.message
        assert len(ci.started("gitlab")) == 1


def test_jenkins_build_with_parameters_sends_the_crumb_and_cooldown():
    with running() as ci:
        env = ci_env(ci, "jenkins")
        first = trigger_retrain(retrain("jenkins"), "scheduled drift check", env)
        assert first.triggered
        (post,) = posts(ci)
        assert post.path == "/jenkins/job/mlops/job/main/buildWithParameters"
        assert post.first("RETRAIN_REASON") == "scheduled drift check"
        basic = base64.b64encode(f"{ci.jenkins_user}:{TOKEN}".encode()).decode()
        assert post.headers["authorization"] == f"Basic {basic}"
        assert post.headers["jenkins-crumb"] == JENKINS_CRUMB
        assert not trigger_retrain(retrain("jenkins"), "again", env).triggered
        assert len(ci.started("jenkins")) == 1


def test_jenkins_without_csrf_protection_needs_no_crumb():
    with running(crumb=False) as ci:
        assert trigger_retrain(retrain("jenkins"), "r", ci_env(ci, "jenkins")).triggered
        assert "jenkins-crumb" not in posts(ci)[0].headers


def test_provider_auto_follows_the_ci_variables_and_params_ids_win():
    with running() as ci:
        env = {**ci_env(ci, "github"), "GITHUB_ACTIONS": "true", "GITHUB_REPOSITORY": "acme/other"}
        params = retrain("auto", github={**retrain("github").github.model_dump(), "repository": "acme/churn"})
        assert trigger_retrain(params, "r", env).provider == "github"
        assert posts(ci)[0].path.startswith("/github/repos/acme/churn/")


# ------------------------------------------------------------------ cooldown
def test_a_run_before_the_window_does_not_count_one_inside_does():
    now = dt.datetime.now(dt.UTC)
    with running() as ci:
        ci.seed("github", now - dt.timedelta(hours=30))
        assert trigger_retrain(retrain("github"), "r", ci_env(ci, "github")).triggered
    with running() as ci:
        ci.seed("github", now - dt.timedelta(hours=2))
        result = trigger_retrain(retrain("github"), "r", ci_env(ci, "github"))
        assert not result.triggered and not ci.started()


def test_zero_cooldown_always_triggers():
    with running() as ci:
        for _ in range(2):
            assert trigger_retrain(retrain("github", cooldown_hours=0.0), "r", ci_env(ci, "github")).triggered
        assert len(ci.started()) == 2
        assert not [r for r in ci.requests if r.method == "GET"], "no lookup without a cooldown"


def test_without_a_ci_lookup_the_state_url_is_the_fallback(tmp_path):
    """GitLab without a read_api token cannot list pipelines: the record at retrain.state_url decides."""
    with running() as ci:
        env = ci_env(ci, "gitlab")
        del env["GITLAB_TOKEN"]
        # no lookup and no record: the cooldown cannot be enforced (a warning), every call triggers
        assert trigger_retrain(retrain("gitlab"), "a", env).triggered
        assert trigger_retrain(retrain("gitlab"), "b", env).triggered
        state = tmp_path / "state" / "retrain.json"
        params = retrain("gitlab", state_url=str(state))
        assert trigger_retrain(params, "c", env).triggered
        assert json.loads(state.read_text())["reason"] == "c"
        second = trigger_retrain(params, "d", env)
        assert not second.triggered and str(state) in second.message
        assert [r["reason"] for r in ci.started()] == ["a", "b", "c"]
        assert not [r for r in ci.requests if r.method == "GET"]


# ------------------------------------------------------------------ errors
@pytest.mark.parametrize("provider", ["github", "gitlab", "jenkins"])
def test_http_failure_names_the_provider_and_status_never_the_token(provider):
    with running(fail=503) as ci:
        with pytest.raises(TriggerFailed) as err:
            trigger_retrain(retrain(provider), "r", ci_env(ci, provider))
    message = str(err.value)
    assert f"{provider} API POST" in message and "HTTP 503" in message and TOKEN not in message
    assert "MLOPS_RETRAIN_TOKEN" in message


def test_a_wrong_token_is_an_http_401_error():
    with running() as ci:
        env = {**ci_env(ci, "github"), "MLOPS_RETRAIN_TOKEN": "wrong-token-value"}
        with pytest.raises(TriggerFailed, match="github API POST .*dispatches: HTTP 401") as err:
            trigger_retrain(retrain("github"), "r", env)
        assert "wrong-token-value" not in str(err.value)


@pytest.mark.parametrize(
    ("provider", "missing"),
    [("github", "MLOPS_RETRAIN_TOKEN"), ("gitlab", "MLOPS_RETRAIN_TOKEN"), ("jenkins", "JENKINS_USER")],
)
def test_missing_token_is_a_config_error_naming_the_variable(provider, missing):
    with running() as ci:
        env = ci_env(ci, provider)
        del env[missing]
        with pytest.raises(ConfigError, match=f"environment variable {missing} is not set"):
            trigger_retrain(retrain(provider), "r", env)
        assert not ci.requests


def cli_params(tmp_path: Path, provider: str, **changes) -> Path:
    doc = yaml.safe_load(FIXTURE_PARAMS.read_text())
    doc["retrain"].update(provider=provider, **changes)
    path = tmp_path / "params.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def test_cli_exit_codes_and_output(tmp_path, monkeypatch, capsys):
    params = cli_params(tmp_path, "github")
    with running() as ci:
        for key, value in ci_env(ci, "github").items():
            monkeypatch.setenv(key, value)
        monkeypatch.delenv("MLOPS_RETRAIN_TOKEN")
        assert cli.main(["--params", str(params), "trigger-retrain", "--reason", "x"]) == 2
        assert "MLOPS_RETRAIN_TOKEN is not set" in capsys.readouterr().err

        monkeypatch.setenv("MLOPS_RETRAIN_TOKEN", TOKEN)
        assert cli.main(["--params", str(params), "trigger-retrain", "--reason", "drift", "--json"]) == 0
        out = json.loads(capsys.readouterr().out)
        assert out["triggered"] is True and out["provider"] == "github"
        assert cli.main(["--params", str(params), "trigger-retrain", "--reason", "drift"]) == 0
        assert "not triggered" in capsys.readouterr().out  # a no-op says so, and exits 0

        ci.fail = 500
        ci.runs.clear()
        assert cli.main(["--params", str(params), "trigger-retrain", "--reason", "drift"]) == 1
        err = capsys.readouterr().err
        assert "github API POST" in err and "HTTP 500" in err and TOKEN not in err


# ------------------------------------------------------------------ the Alertmanager receiver
def notification(status: str = "firing", alerts: list | None = None) -> dict:
    """An Alertmanager webhook (version 4) body, as Alertmanager 0.25 sends it."""
    alerts = alerts or [
        {
            "status": status,
            "labels": {"alertname": "MlopsDriftDetected", "model": "churn-mlp", "severity": "warning"},
            "annotations": {"summary": "drift share over threshold"},
            "startsAt": "2026-12-02T01:00:00Z",
            "endsAt": "0001-01-01T00:00:00Z",
            "generatorURL": "http://prometheus/graph",
            "fingerprint": "5ef77f1f8a3ecfa9",  # pragma: allowlist secret
        }
    ]
    return {
        "version": "4",
        "groupKey": '{}:{alertname="MlopsDriftDetected"}',
        "truncatedAlerts": 0,
        "status": status,
        "receiver": "retrain",
        "groupLabels": {"alertname": "MlopsDriftDetected"},
        "commonLabels": {"alertname": "MlopsDriftDetected"},
        "commonAnnotations": {},
        "externalURL": "http://alertmanager:9093",
        "alerts": alerts,
    }


def http(url: str, body: bytes | None = None) -> tuple[int, dict]:
    req = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"} if body else {})
    try:
        with urllib.request.urlopen(req, timeout=30) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def receiver_argv(params: Path, port: int) -> list[str]:
    """`mlops trigger-retrain --listen` on 127.0.0.1:port, as the chart's retrain-trigger runs it."""
    return [
        sys.executable,
        "-m",
        "mlops",
        "--params",
        str(params),
        "trigger-retrain",
        "--listen",
        f"127.0.0.1:{port}",
    ]


def test_receiver_end_to_end(tmp_path):
    """`mlops trigger-retrain --listen`: a firing notification triggers once, repeats are no-ops within
    the cooldown, a resolved one does nothing, a malformed one is a 400 naming the field."""
    params = cli_params(tmp_path, "gitlab")
    port = free_port()
    with running() as ci:
        env = {**os.environ, **ci_env(ci, "gitlab")}
        proc = subprocess.Popen(
            receiver_argv(params, port),
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        base = f"http://127.0.0.1:{port}"
        try:
            deadline = time.monotonic() + 60
            while True:
                try:
                    assert http(f"{base}/healthz") == (200, {"status": "ok"})
                    break
                except (urllib.error.URLError, ConnectionError):
                    assert proc.poll() is None and time.monotonic() < deadline, proc.stderr.read()
                    time.sleep(0.2)

            status, body = http(f"{base}/alertmanager", json.dumps(notification()).encode())
            assert status == 200 and body["triggered"] is True, body
            status, body = http(f"{base}/alertmanager", json.dumps(notification()).encode())
            assert status == 200 and body["triggered"] is False and "cooldown" in body["message"]
            status, body = http(f"{base}/alertmanager", json.dumps(notification("resolved")).encode())
            assert status == 200 and body["triggered"] is False

            bad = notification()
            bad["alerts"][0]["labels"] = ["not", "a", "map"]
            assert http(f"{base}/alertmanager", json.dumps(bad).encode()) == (
                400,
                {"error": "alerts.0.labels: expected an object of strings"},
            )
            status, body = http(f"{base}/alertmanager", b"{not json")
            assert status == 400 and body["error"].startswith("body: not JSON")
            status, body = http(
                f"{base}/alertmanager", json.dumps({**notification(), "version": "3"}).encode()
            )
            assert status == 400 and body["error"].startswith("version:")
        finally:
            proc.terminate()
            out, err = proc.communicate(timeout=30)
        assert proc.returncode == 0, err
        (run,) = ci.started()
        assert run["variables"] == {
            "MLOPS_RETRAIN_REASON": "alertmanager: MlopsDriftDetected (model=churn-mlp)"
        }


def test_receiver_counts_a_restart_against_the_ci_lookup(tmp_path):
    """A fresh receiver (a restarted pod) does not trigger again: the CI's run list holds the cooldown."""
    from mlops.monitor.webhook import Receiver

    with running() as ci:
        env = ci_env(ci, "github")
        assert Receiver(retrain("github"), env).notify(notification()).triggered
        assert not Receiver(retrain("github"), env).notify(notification()).triggered
        assert len(ci.started()) == 1
