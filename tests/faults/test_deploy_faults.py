"""Deploy faults: the registry (a real `mlflow server`) crashes while a model is deployed. `mlops
fetch-model` (the serving pod's init container) and `mlops promote` refuse with exit 5 naming the
registry, leave the model volume, the env's promotion record, the git history and the alias as they
were, and work again once the registry is back (docs/faults.md)."""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import pytest
from mlflow import MlflowClient

from .injectors import MlflowServer, mlops_env, register, run_mlops, tree_bytes, unique
from conftest import FIXTURE_PARAMS, Workspace, copy_repository

pytestmark = pytest.mark.slow
RECORD = "deploy/envs/staging/model.yaml"


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, check=True).stdout


def clone_with_origin(root: Path) -> Path:
    """A copy of this repository on `main` with a bare `origin` (what a CI checkout has)."""
    repo = copy_repository(root / "repo")
    subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(root / "origin.git")], check=True)
    git(repo, "remote", "add", "origin", str(root / "origin.git"))
    git(repo, "push", "-q", "origin", "main")
    return repo


def test_registry_down_during_fetch_model_and_promote_changes_nothing(
    gated_model: Workspace, registry_server: MlflowServer, tmp_path: Path
):
    """With a version promoted to staging and fetched into the serving volume, the registry crashes
    (SIGKILL): fetch-model and promote exit 5 within seconds naming the registry; the volume's files,
    the record, HEAD, the working tree and the alias are untouched, no temp dir is left; once the
    registry is back, the same promote is a no-op and fetch-model places the same files."""
    server = registry_server.ensure_up()
    env = {
        k: v
        for k, v in mlops_env(MLFLOW_TRACKING_URI=server.url).items()
        if not k.startswith("MLFLOW_HTTP_REQUEST_")
    }
    name = unique("fault-deploy")
    version = register(gated_model, server, name)
    repo = clone_with_origin(tmp_path)
    promote = ("--params", str(FIXTURE_PARAMS), "promote", "--repo", str(repo), "--env", "staging")
    promote += ("--version", version, "--name", name)
    first = run_mlops(*promote, env=env, cwd=repo)
    assert first.returncode == 0, first.stderr[-3000:]
    volume = tmp_path / "model-volume"
    fetch = ("fetch-model", "--name", name, "--version", version, "--dest", str(volume))
    assert run_mlops(*fetch, env=env).returncode == 0
    record, head = (repo / RECORD).read_bytes(), git(repo, "rev-parse", "HEAD")
    files, listed = tree_bytes(volume), sorted(os.listdir(volume))
    alias = MlflowClient(server.url, server.url).get_registered_model(name).aliases

    server.kill()
    refused = {}
    for label, args, cwd in (("fetch-model", fetch, None), ("promote", promote, repo)):
        ran = run_mlops(*args, env=env, cwd=cwd)
        refused[label] = round(ran.seconds, 1)
        assert ran.returncode == 5, f"{label}: {ran.stderr[-3000:]}"
        assert ran.last_line.startswith(f"mlops {label}: error: ") and server.url in ran.last_line
        assert ran.seconds < 60, f"{label} took {ran.seconds:.0f} s"
    assert tree_bytes(volume) == files and sorted(os.listdir(volume)) == listed  # no .fetch-* temp dir
    assert (repo / RECORD).read_bytes() == record
    assert git(repo, "rev-parse", "HEAD") == head
    assert git(repo, "status", "--porcelain") == ""

    server.start()  # the recovery: rerun the same commands
    assert MlflowClient(server.url, server.url).get_registered_model(name).aliases == alias
    again = run_mlops(*promote, "--json", env=env, cwd=repo)
    assert again.returncode == 0, again.stderr[-3000:]
    assert json.loads(again.stdout)["action"] == "unchanged"
    assert run_mlops(*fetch, env=env).returncode == 0
    assert tree_bytes(volume) == files
    print(f"\nregistry down: exit 5 after {refused} s")
