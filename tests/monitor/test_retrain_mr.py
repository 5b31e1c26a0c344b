"""mlops retrain-mr: the retrain job's changes -> branch retrain/<date> in a real bare `origin` and one review
merge request (the forge API is the labelled test double of tests/deploy/mr_double.py). The job's own
checkout is left as it was."""

from __future__ import annotations

import datetime as dt
import json
import subprocess
from pathlib import Path

import pytest
from deploy.mr_double import running

from mlops.errors import ConfigError
from mlops.monitor.retrain_mr import open_retrain_mr

from conftest import REPO

TOKEN = "gh-token-for-the-double"
DAY = dt.date(2026, 12, 2)


def git(cwd: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, text=True).stdout


@pytest.fixture
def clone(tmp_path: Path) -> Path:
    """A CI checkout of a small project (dvc.lock, a git-tracked metrics file, deploy/promotion.yaml)
    with a bare origin."""
    seed = tmp_path / "seed"
    (seed / "deploy").mkdir(parents=True)
    (seed / "reports").mkdir()
    (seed / "deploy/promotion.yaml").write_text((REPO / "deploy/promotion.yaml").read_text())
    (seed / "dvc.lock").write_text("schema: '2.0'\nstages: {train: {outs: [{md5: aaa}]}}\n")
    (seed / "reports/summary.json").write_text('{"roc_auc": 0.84}\n')
    (seed / "obsolete.txt").write_text("removed by the pipeline\n")
    git(tmp_path, "init", "-q", "-b", "main", str(seed))
    git(seed, "add", "-A")
    git(seed, "-c", "user.name=t", "-c", "user.email=t@localhost", "commit", "-qm", "seed")
    git(tmp_path, "clone", "-q", "--bare", str(seed), str(tmp_path / "origin.git"))
    git(tmp_path, "clone", "-q", str(tmp_path / "origin.git"), str(tmp_path / "ci"))
    return tmp_path / "ci"


def forge_env(url: str) -> dict[str, str]:
    return {
        "MLOPS_FORGE": "github",
        "GITHUB_REPOSITORY": "acme/churn",
        "GITHUB_TOKEN": TOKEN,
        "GITHUB_API_URL": url + "/github",
        "GITHUB_RUN_ID": "77",
    }


def reproduce(clone: Path, md5: str) -> None:
    """What `dvc repro` does to the checkout: rewrites dvc.lock and tracked outputs, leaves new files."""
    (clone / "dvc.lock").write_text(f"schema: '2.0'\nstages: {{train: {{outs: [{{md5: {md5}}}]}}}}\n")
    (clone / "reports/summary.json").write_text(json.dumps({"roc_auc": 0.86}) + "\n")
    (clone / "obsolete.txt").unlink(missing_ok=True)
    (clone / "scratch.log").write_text("untracked: never committed\n")


def test_retrain_opens_one_merge_request_from_the_dated_branch(clone: Path, tmp_path: Path):
    origin = tmp_path / "origin.git"
    reproduce(clone, "bbb")
    with running(TOKEN, origin) as double:
        result = open_retrain_mr(
            clone, "alertmanager: MlopsDriftDetected", "main", env=forge_env(double.url), today=DAY
        )
        assert result["action"] == "merge-request" and result["branch"] == "retrain/2026-12-02"
        assert result["files"] == ["dvc.lock", "obsolete.txt", "reports/summary.json"]
        (mr,) = double.merge_requests
        assert mr["source"] == "retrain/2026-12-02" and mr["target"] == "main"
        assert mr["body"]["title"] == "retrain: alertmanager: MlopsDriftDetected"
        assert "https://github.com/acme/churn/actions/runs/77" in mr["body"]["body"]

        pushed = git(origin, "show", "--stat", "--format=%s", "retrain/2026-12-02")
        assert pushed.startswith("retrain: alertmanager: MlopsDriftDetected")
        assert git(origin, "show", "retrain/2026-12-02:dvc.lock").count("bbb") == 1
        tree = git(origin, "ls-tree", "-r", "--name-only", "retrain/2026-12-02").split()
        assert "obsolete.txt" not in tree and "scratch.log" not in tree

        # the job's checkout is untouched: still on main with the pipeline's changes, no local branch
        assert git(clone, "rev-parse", "--abbrev-ref", "HEAD").strip() == "main"
        assert "bbb" in (clone / "dvc.lock").read_text() and (clone / "scratch.log").exists()
        assert "retrain/" not in git(clone, "branch", "--list")

        # a second retrain the same day updates the branch and finds the open merge request
        reproduce(clone, "ccc")
        again = open_retrain_mr(clone, "scheduled", "main", env=forge_env(double.url), today=DAY)
        assert again["merge_request"]["action"] == "exists" and len(double.merge_requests) == 1
        assert "ccc" in git(origin, "show", "retrain/2026-12-02:dvc.lock")


def test_nothing_changed_opens_nothing(clone: Path, tmp_path: Path):
    (clone / "scratch.log").write_text("untracked files do not count\n")
    with running(TOKEN, tmp_path / "origin.git") as double:
        assert open_retrain_mr(clone, "r", "main", env=forge_env(double.url), today=DAY) == {
            "action": "unchanged"
        }
        assert double.requests == []


def test_no_forge_is_refused_before_anything_is_pushed(clone: Path, tmp_path: Path):
    reproduce(clone, "bbb")
    with pytest.raises(ConfigError, match="cannot open a merge request"):
        open_retrain_mr(clone, "r", "main", env={}, today=DAY)
    assert "retrain/" not in git(tmp_path / "origin.git", "branch", "--list")


def test_no_push_commits_the_branch_locally(clone: Path):
    reproduce(clone, "bbb")
    result = open_retrain_mr(clone, "r", "main", push=False, env={}, today=DAY)
    assert result["action"] == "committed"
    assert "bbb" in git(clone, "show", "retrain/2026-12-02:dvc.lock")
