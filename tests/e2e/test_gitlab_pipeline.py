"""The GitLab pipeline executed for real with gitlab-ci-local (shell executor, one isolated copy of the
repository per job, artifacts passed only where declared), on a temp git copy of this repository.

Jobs reuse the test session's virtualenv through the VENV variable (the Makefile's install stamps are
keyed by pyproject.toml's content), and a temp DVC remote / MLflow store through CI variables.
"""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest
import yaml

from mlops.params_io import read_yaml

from conftest import REPO, copy_repository, nested_ci_env, tool

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
VENV = Path(sys.executable).parent.parent
SHAPES = {
    "merge_request": [
        "--variable",
        "CI_PIPELINE_SOURCE=merge_request_event",
        "--unset-variable",
        "CI_COMMIT_BRANCH",
        "--variable",
        "CI_MERGE_REQUEST_IID=7",
        "--variable",
        "GITLAB_CI=true",  # as on a real runner: the report job detects GitLab
        "--variable",
        "CI_PROJECT_ID=42",
    ],
    "main": ["--variable", "CI_PIPELINE_SOURCE=push", "--variable", "CI_COMMIT_BRANCH=main"],
    # `mlops trigger-retrain` on GitLab: the pipeline trigger API (tests/e2e/test_retrain_pipeline.py)
    "retrain_request": [
        "--variable",
        "CI_PIPELINE_SOURCE=trigger",
        "--variable",
        "CI_COMMIT_BRANCH=main",
        "--variable",
        "GITLAB_CI=true",
    ],
}


def gitlab(
    repo: Path, shape: str, jobs: list[str], variables: dict[str, str]
) -> tuple[int, str, dict[str, str]]:
    """Run the pipeline (or the named jobs) of one shape; return exit code, log and job -> PASS/FAIL."""
    args = [tool("gitlab-ci-local"), "--force-shell-executor", "--shell-isolation", *SHAPES[shape]]
    for key, value in {"VENV": str(VENV), **variables}.items():
        args += ["--variable", f"{key}={value}"]
    # an outer gitlab-ci-local's options (GCL_*) and the caller's make/pytest selection stay outside
    env = nested_ci_env()
    env["GCL_IGNORE_PREDEFINED_VARS"] = "CI_PIPELINE_SOURCE,CI_COMMIT_BRANCH"
    env.pop("MLFLOW_TRACKING_URI", None)  # jobs get theirs from the CI variables only
    proc = subprocess.run([*args, *jobs], cwd=repo, env=env, capture_output=True, text=True, timeout=1500)
    log = proc.stdout + proc.stderr
    verdicts = dict((job, verdict) for verdict, job in re.findall(r"^\s*(PASS|FAIL)\s+(\S+)", log, re.M))
    return proc.returncode, log, verdicts


@pytest.fixture(autouse=True)
def shared_venv_is_installed():
    """Jobs reuse this venv only if its install stamp matches pyproject.toml; otherwise a job would
    reinstall the package in editable mode from its temp copy (and leave the venv pointing there)."""
    digest = hashlib.sha1((REPO / "pyproject.toml").read_bytes()).hexdigest()[:12]
    stamp = VENV / f".installed-dev-{digest}"
    assert stamp.exists(), f"{stamp} missing: run `make install-dev` before these tests (make test does)"


def new_repo(tmp_path: Path, edit_params=None) -> Path:
    repo = copy_repository(tmp_path / "repo")
    if edit_params:
        params = read_yaml(repo / "params.yaml")  # YAML 1.2, as DVC and mlops read it
        edit_params(params)
        (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
        subprocess.run(["git", "commit", "-qam", "change params"], cwd=repo, check=True)
    subprocess.run(["git", "checkout", "-qb", "feature"], cwd=repo, check=True)
    return repo


def test_merge_request_pipeline_passes_the_gate(tmp_path):
    repo = new_repo(tmp_path)
    # the merge-request jobs that check this change; not ci-image (it builds with a runner's own Docker
    # engine: tests/e2e/test_gitlab_ci_image.py builds that image) nor test-e2e/test-docker (this suite)
    code, log, verdicts = gitlab(
        repo,
        "merge_request",
        ["verify", "train", "report"],
        {
            "DVC_REMOTE_URL": str(tmp_path / "remote"),
            "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
        },
    )
    assert code == 0, log[-6000:]
    assert verdicts == {"verify": "PASS", "train": "PASS", "report": "PASS"}, log[-3000:]
    # train needs only the CI image, not the unit tests: it starts before verify is done; report follows
    # train (the order of the log's lines, not a timing)
    assert position(log, "train", "starting") < position(log, "verify", "finished")
    assert position(log, "train", "finished") < position(log, "report", "starting")
    gate = json.loads((repo / "reports/gate.json").read_text())  # artifact copied back by gitlab-ci-local
    assert gate["passed"] is True
    assert "Gate" in (repo / "reports/review/report.md").read_text()
    assert list((tmp_path / "remote").rglob("*")), "ci-train pushed nothing to the DVC remote"
    # no GITLAB_TOKEN variable (as for a fork): the report job says why it did not post, and passes
    assert "not posted: GITLAB_TOKEN is not set" in log


def position(log: str, job: str, event: str) -> int:
    """Where gitlab-ci-local's `<job> starting ...` or `<job> finished in ...` line is in the log."""
    found = re.search(rf"^{job}\s+{event}\b", log, re.M)
    assert found, f"no `{job} {event}` line in the log"
    return found.start()


def unreachable(params: dict) -> None:
    """A bound no model meets, whatever the table: log loss is positive for any model (evaluate clips
    probabilities away from 0 and 1), so a maximum of 0 always fails."""
    params["gate"]["metrics"]["max"]["log_loss"] = 0.0


def test_unreachable_threshold_fails_at_the_gate_and_stops_the_pipeline(tmp_path):
    repo = new_repo(tmp_path, unreachable)
    # verify is independent of params and covered above: run the jobs from train on
    code, log, verdicts = gitlab(
        repo,
        "merge_request",
        ["train", "report"],
        {"MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"},
    )
    assert code != 0
    # the pipeline fails (the merge stays blocked) but the report job still runs and explains why
    assert verdicts.get("train") == "FAIL" and verdicts.get("report") == "PASS", log[-3000:]
    report = (repo / "reports/review/report.md").read_text()
    assert "❌ failed" in report and "metrics.max.log_loss" in report
    assert "metrics.max.log_loss" in log
    gate = json.loads((repo / "reports/gate.json").read_text())  # `artifacts: when: always`
    assert gate["passed"] is False
    failed = [r for r in gate["rules"] if r["verdict"] == "fail"]
    assert [r["id"] for r in failed] == ["metrics.max.log_loss"], failed


def test_main_pipeline_registers_the_model_in_a_real_mlflow_server(tmp_path, mlflow_server):
    repo = new_repo(tmp_path)
    subprocess.run(["git", "checkout", "-q", "main"], cwd=repo, check=True)
    # release as outside CI (CI=false): under CI it also builds and pushes the images, which needs a
    # Docker engine and a registry, and refuses (exit 2, nothing registered) without them
    # (tests/ci/test_ci_variables.py); here it registers and builds no image
    code, log, verdicts = gitlab(
        repo, "main", ["train", "release"], {"MLFLOW_TRACKING_URI": mlflow_server, "CI": "false"}
    )
    assert code == 0, log[-6000:]
    assert verdicts == {"train": "PASS", "release": "PASS"}, log[-3000:]
    weights = json.loads((repo / "models/model.json").read_text())["weights"]["sha256"]
    mlflow.set_tracking_uri(mlflow_server)
    client = mlflow.tracking.MlflowClient()
    name = read_yaml(repo / "params.yaml")["train"]["model_name"]
    versions = client.search_model_versions(f"name = '{name}'")
    mine = [v for v in versions if v.tags.get("weights_sha256") == weights]
    assert len(mine) == 1 and mine[0].tags["gate"] == "passed"
    assert client.get_registered_model(name).aliases.get("candidate") == mine[0].version
    # the release's artifact for promote: exactly this version (no images: none built outside CI)
    registered = json.loads((repo / "reports/registered.json").read_text())
    assert (registered["name"], registered["version"], registered["images"]) == (name, mine[0].version, {})
