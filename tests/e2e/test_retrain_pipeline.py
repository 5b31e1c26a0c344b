"""A retrain request end to end on GitLab's pipeline, executed with gitlab-ci-local (shell executor, the
job in its own copy of a temp git copy of this repository): the trigger API's pipeline shape
(CI_PIPELINE_SOURCE=trigger with MLOPS_RETRAIN_REASON) runs only `retrain`, which reproduces the
pipeline (gate included), pushes to the DVC remote, pushes the branch retrain/<date> to a real bare
`origin` and opens one merge request with the reason. It never registers or deploys. The merge-request
API is the labelled test double of tests/deploy/mr_double.py (no GitLab server can run here).
"""

from __future__ import annotations

import datetime as dt
import subprocess
from pathlib import Path

import pytest
import yaml
from deploy.mr_double import running
from test_gitlab_pipeline import gitlab, shared_venv_is_installed  # noqa: F401 - autouse fixture

from mlops.params_io import read_yaml

from conftest import copy_repository

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
TOKEN = "glpat-test-double-token"  # pragma: allowlist secret
REASON = "alertmanager: MlopsDataDrift (model=churn-mlp)"


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout


def test_a_retrain_request_opens_a_merge_request_and_deploys_nothing(tmp_path):
    repo = copy_repository(tmp_path / "repo")
    # a params change the committed dvc.lock does not reflect yet (what new data does to the fingerprint)
    params = read_yaml(repo / "params.yaml")
    params["validate"]["max_examples"] = params["validate"]["max_examples"] + 1
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    git(repo, "commit", "-qam", "params the lock does not reflect yet")
    origin = tmp_path / "origin.git"
    git(tmp_path, "clone", "-q", "--bare", str(repo), str(origin))
    git(repo, "remote", "add", "origin", str(origin))
    remote, db = tmp_path / "dvc-remote", tmp_path / "mlflow.db"

    with running(TOKEN, origin) as double:
        code, log, verdicts = gitlab(
            repo,
            "retrain_request",
            ["retrain"],
            {
                "MLOPS_RETRAIN_REASON": REASON,
                "CI_PROJECT_ID": "42",
                "CI_API_V4_URL": f"{double.url}/gitlab/api/v4",
                "CI_PIPELINE_URL": "https://gitlab.example.com/ml/churn/-/pipelines/99",
                "GITLAB_TOKEN": TOKEN,
                "PROMOTE_PUSH_URL": str(
                    origin
                ),  # the job's https://oauth2:<token>@host URL, here the bare repo
                "DVC_REMOTE_URL": str(remote),
                "MLFLOW_TRACKING_URI": f"sqlite:///{db}",
            },
        )
        assert code == 0, log[-6000:]
        assert verdicts == {"retrain": "PASS"}, log[-3000:]
        branch = f"retrain/{dt.datetime.now(dt.UTC).date().isoformat()}"
        (mr,) = double.merge_requests
        assert (mr["forge"], mr["source"], mr["target"]) == ("gitlab", branch, "main")
        assert mr["body"]["title"] == f"retrain: {REASON}"
        assert "pipelines/99" in mr["body"]["description"] and "dvc.lock" in mr["body"]["description"]

    # the branch holds the reproduced lock; main is untouched
    changed = git(origin, "diff", "--name-only", "main", branch).split()
    assert "dvc.lock" in changed
    assert git(origin, "log", "-1", "--format=%s", branch).strip() == f"retrain: {REASON}"
    assert list(remote.rglob("*")), "ci-retrain pushed nothing to the DVC remote"
    # nothing registered (no release job, no `mlops register`)
    assert "mlops register" not in log and "mlops promote" not in log
