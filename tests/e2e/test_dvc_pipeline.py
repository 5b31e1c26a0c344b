"""End to end: `dvc repro` in a temp copy of the repository, no-op rerun, push, and a fresh clone that
reproduces from the remote's run-cache without executing any stage."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conftest import copy_repository

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
STAGES = ["ingest", "validate", "featurize", "train", "evaluate", "gate"]


def sh(*cmd: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    return proc


def executed(proc: subprocess.CompletedProcess) -> list[str]:
    return [line.split("'")[1] for line in proc.stdout.splitlines() if line.startswith("Running stage")]


def use_remote(repo: Path, remote: Path, env) -> None:
    """Point the default remote at a temp dir via config.local (git-ignored), leaving .dvc/config as shipped."""
    sh("dvc", "remote", "add", "--local", "-f", "-d", "testremote", str(remote), cwd=repo, env=env)


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    e = dict(os.environ)
    e["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{e['PATH']}"
    e["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"
    return e


@pytest.fixture(scope="module")
def copy(tmp_path_factory) -> Path:
    return copy_repository(tmp_path_factory.mktemp("repo") / "repo")


@pytest.fixture(scope="module")
def reproduced(copy, env, tmp_path_factory):
    remote = tmp_path_factory.mktemp("dvc-remote")
    use_remote(copy, remote, env)
    first = sh("dvc", "repro", cwd=copy, env=env)
    return copy, remote, first


def test_cold_repro_runs_every_stage_and_meets_the_bar(reproduced):
    repo, _, first = reproduced
    assert executed(first) == STAGES
    metrics = json.loads((repo / "reports/metrics.json").read_text())
    assert metrics["test"]["roc_auc"] >= 0.80
    assert not [p for p in (repo / "models").iterdir() if p.suffix in (".pkl", ".pt", ".pth", ".pickle")]


def test_committed_dvc_lock_is_reproduced_exactly(reproduced, env):
    """The lock in git matches a from-scratch run: outputs are byte-reproducible across machines.

    Exception: the gate's reports carry measured inference latencies, so only their inputs must match."""
    repo, _, _ = reproduced
    committed = yaml.safe_load(
        subprocess.run(
            ["git", "show", "HEAD:dvc.lock"], cwd=repo, capture_output=True, text=True, check=True
        ).stdout
    )["stages"]
    fresh = yaml.safe_load((repo / "dvc.lock").read_text())["stages"]
    assert set(committed) == set(fresh) == set(STAGES)
    for stage in STAGES:
        keys = ("cmd", "deps", "params") if stage == "gate" else ("cmd", "deps", "params", "outs")
        for key in keys:
            assert committed[stage].get(key) == fresh[stage].get(key), f"dvc.lock is stale: {stage}.{key}"


def test_dvc_plots_and_metrics_render(reproduced, env):
    """`dvc plots show` renders the four declared plots; `dvc metrics show` reads the metrics file."""
    repo, _, _ = reproduced
    plots = json.loads(sh("dvc", "plots", "show", "--json", cwd=repo, env=env).stdout)
    assert set(plots["data"]) == {"ROC", "Precision-recall", "Confusion matrix", "Calibration"}
    assert all(plots["data"][name] for name in plots["data"]), "a plot rendered no data"
    shown = json.loads(sh("dvc", "metrics", "show", "--json", cwd=repo, env=env).stdout)
    data = next(iter(shown.values()))["data"]["reports/metrics.json"]["data"]
    assert data["test"]["roc_auc"] >= 0.80


def test_second_repro_executes_nothing(reproduced, env):
    repo, _, _ = reproduced
    again = sh("dvc", "repro", cwd=repo, env=env)
    assert executed(again) == [] and "Data and pipelines are up to date" in again.stdout


@pytest.mark.parametrize(
    "restore", [["dvc", "pull", "--run-cache"], None], ids=["pull-run-cache", "repro-pull"]
)
def test_fresh_clone_reproduces_from_the_remote_without_running(reproduced, env, tmp_path, restore):
    repo, remote, _ = reproduced
    sh("dvc", "push", "--run-cache", cwd=repo, env=env)
    sh("git", "commit", "-q", "--allow-empty", "-am", "lock", cwd=repo, env=env)
    clone = tmp_path / "clone"
    sh("git", "clone", "-q", str(repo), str(clone), cwd=tmp_path, env=env)
    use_remote(clone, remote, env)
    if restore:
        sh(*restore, cwd=clone, env=env)
        proc = sh("dvc", "repro", cwd=clone, env=env)
    else:
        proc = sh("dvc", "repro", "--pull", cwd=clone, env=env)
    assert executed(proc) == []
    for out in ("models/model.safetensors", "reports/metrics.json", "data/processed/test.parquet"):
        assert (clone / out).read_bytes() == (repo / out).read_bytes(), out
    status = sh("dvc", "status", cwd=clone, env=env)
    assert "up to date" in status.stdout
