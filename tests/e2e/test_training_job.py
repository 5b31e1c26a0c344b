"""The TrainJob's node pod rehearsed without a cluster: the chart rendered for one node x 2 processes, its
dvc-pull init script run against a DVC project whose featurize outputs sit in a local remote (as CI's
`dvc push` leaves them), then the rendered torchrun command run in the workspace with the PET_* variables
the Trainer's torch plugin would set. It must train with world size 2 on gloo from the pulled data and
track the run in MLflow; what Kubernetes adds (scheduling, the headless Service) is not rehearsed here.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from deploy.test_training_chart import container, parts, rendered

from conftest import FIXTURE_PARAMS, REPO, free_port

pytestmark = [pytest.mark.slow, pytest.mark.e2e]
BIN = Path(sys.executable).parent


def sh(cmd: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    result = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, f"{' '.join(cmd)}\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}"
    return result


def host_env() -> dict[str, str]:
    """This environment with the venv's tools first and no tracking URI (each test names its own)."""
    env = {**os.environ, "DVC_NO_ANALYTICS": "1", "PATH": f"{BIN}:{os.environ['PATH']}"}
    env.pop("MLFLOW_TRACKING_URI", None)
    return env


def featurized_project(
    app: Path, remote: Path, params: Path = FIXTURE_PARAMS, lock: Path | None = None
) -> dict:
    """The project a pipeline image holds (code, dvc.yaml, `params`, `lock` as its dvc.lock) at `app`,
    with featurize's outputs only in the local DVC remote `remote`, as CI's `dvc repro` + `dvc push`
    leave them (tests/e2e/test_pipeline_image.py: the repository's params and dvc.lock). Returns the
    project's dvc.lock after the repro."""
    env = host_env()
    app.mkdir()
    shutil.copytree(REPO / "src", app / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    shutil.copy(REPO / "dvc.yaml", app / "dvc.yaml")
    shutil.copy(params, app / "params.yaml")
    if lock is not None:
        shutil.copy(lock, app / "dvc.lock")
    sh(["dvc", "init", "--no-scm", "-q"], app, env)
    sh(["dvc", "remote", "add", "-d", "ci", str(remote)], app, env)
    sh(["dvc", "repro", "-q", "featurize"], app, env)
    sh(["dvc", "push", "-q"], app, env)
    for produced in ("data", "reports", ".dvc/cache", "mlflow.db", "mlartifacts"):
        shutil.rmtree(app / produced, ignore_errors=True)
    return yaml.safe_load((app / "dvc.lock").read_text())


def torch_plugin_env(trainer: dict, master_port: int) -> dict[str, str]:
    """What the Trainer's torch plugin sets in node 0 of a 1-node TrainJob (`trainer`: its spec.trainer)."""
    return {
        "PET_NNODES": str(trainer["numNodes"]),
        "PET_NPROC_PER_NODE": str(trainer["numProcPerNode"]),
        "PET_NODE_RANK": "0",
        "PET_MASTER_ADDR": "127.0.0.1",
        "PET_MASTER_PORT": str(master_port),
    }


def test_rendered_node_pod_trains_under_torchrun(tmp_path):
    env = host_env()
    # the image's project: code, dvc.yaml, params; featurize's outputs only in the DVC remote
    app, remote = tmp_path / "app", tmp_path / "remote"
    featurized_project(app, remote)

    ws = tmp_path / "workspace"
    ws.mkdir()
    vals = {
        "tracking": {"secretName": "mlflow"},  # pragma: allowlist secret
        "image": {"projectDir": str(app)},
        "volumes": {"workspaceDir": str(ws)},
        "trainer": {"numNodes": 1, "numProcPerNode": 2},
        "params": {"train.epochs": 3},
        "logJson": False,
    }
    job, _, pod = parts(rendered(vals))

    init = container(pod, "dvc-pull")
    init_env = {**env, **{e["name"]: e["value"] for e in init["env"]}, "HOME": str(tmp_path)}
    init_env["DVC_SITE_CACHE_DIR"] = str(tmp_path / "dvc-site-cache")
    sh(init["command"], ws, init_env)
    pulled = sorted(str(p.relative_to(ws)) for p in (ws / "data").rglob("*") if p.is_file())
    assert pulled == sorted(init["command"][4:])  # exactly the train stage's data deps

    node = container(pod, "node")
    trainer = job["spec"]["trainer"]
    node_env = {**env, **{e["name"]: e["value"] for e in trainer["env"]}, "HOME": str(tmp_path)}
    node_env |= torch_plugin_env(trainer, free_port())
    node_env["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp_path / 'mlflow.db'}"  # from the tracking Secret
    assert node["workingDir"] == str(ws)
    sh(node["command"], ws, node_env)

    meta = json.loads((ws / "models" / "model.json").read_text())
    assert {k: meta["training"][k] for k in ("world_size", "backend", "device")} == {
        "world_size": 2,
        "backend": "gloo",
        "device": "cpu",
    }
    import mlflow

    client = mlflow.tracking.MlflowClient(node_env["MLFLOW_TRACKING_URI"])
    (experiment,) = [e for e in client.search_experiments() if e.name != "Default"]
    (run,) = client.search_runs([experiment.experiment_id])  # rank 0 alone tracks
    assert run.data.params  # the run carries the training params
    assert not (app / "data").exists() and "epochs: 40" in (app / "params.yaml").read_text()
