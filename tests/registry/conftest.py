"""Fixtures for gate, registry and report tests: a real MLflow server, workspace copies, altered models.

The MLflow server is the real thing (`mlflow server`, SQLite backend, local artifacts, 127.0.0.1, one
worker), started once per session in its own process group and stopped as a group.
"""

from __future__ import annotations

import shutil
import sys
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from safetensors.torch import load_file

from mlops import model as model_lib

from conftest import Workspace

BIN = Path(sys.executable).parent


@pytest.fixture
def server_uri(mlflow_server: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """Point this test's MLflow client at the real server."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    return mlflow_server


def copy_workspace(src: Workspace, dest: Path) -> Workspace:
    """A writable copy of a pipeline workspace (the session `pipeline` is read-only)."""
    shutil.copytree(src.root, dest, ignore=shutil.ignore_patterns("mlruns", "mlartifacts", "mlflow.db"))
    return Workspace(dest)


def set_gate(ws: Workspace, **changes: object) -> None:
    """Edit params.yaml's gate section: keys are dotted paths below `gate` (e.g. `metrics.min`)."""
    data = yaml.safe_load(ws.params.read_text())
    for dotted, value in changes.items():
        node = data["gate"]
        *parents, last = dotted.split(".")
        for key in parents:
            node = node[key]
        node[last] = value
    ws.params.write_text(yaml.safe_dump(data, sort_keys=False))


def gate_args(ws: Workspace) -> list[str]:
    """`mlops gate` arguments for a workspace (dvc.yaml's command, paths under its root)."""
    return ws.stage_args("gate")


def evaluate_args(ws: Workspace) -> list[str]:
    return ws.stage_args("evaluate")


def register_args(ws: Workspace, name: str, *extra: str) -> list[str]:
    """`mlops register --json` arguments for a workspace's gated model, registered as `name`."""
    return [
        "register",
        "--model-dir",
        str(ws.models),
        "--gate",
        str(ws.root / "reports/gate.json"),
        "--metrics",
        str(ws.metrics),
        "--dvc-lock",
        str(ws.root / "dvc.lock"),
        "--data",
        str(ws.raw),
        "--train",
        str(ws.processed / "train.parquet"),
        "--test",
        str(ws.processed / "test.parquet"),
        "--name",
        name,
        "--json",
        *extra,
    ]


def split_rows(ws: Workspace, n: int = 20, with_missing: int = 5) -> pd.DataFrame:
    """Raw rows of a workspace's test split with exactly the feature columns of its model.json.

    The first `n` test rows plus up to `with_missing` rows that have a missing value (nullable columns):
    rows a consumer of the model would send, derived from the model's own feature spec and the test
    split, whatever table the pipeline was pointed at.
    """
    meta = model_lib.read_metadata(ws.models)
    features = [f["name"] for f in meta["features"]]
    ids = pd.read_parquet(ws.processed / "test.parquet", columns=[meta["id"]])
    rows = ids.merge(pd.read_parquet(ws.raw), on=meta["id"], how="left", validate="one_to_one")[features]
    missing = rows[rows.isna().any(axis=1)].head(with_missing)
    return pd.concat([rows.head(n), missing]).reset_index(drop=True)


def perturb_weights(ws: Workspace, scale: float, seed: int = 0) -> str:
    """Add seeded Gaussian noise (relative `scale`) to every weight and re-save; returns the new sha256."""
    import torch

    meta = model_lib.read_metadata(ws.models)
    net = model_lib.build(meta["architecture"])
    state = load_file(str(ws.models / model_lib.WEIGHTS))
    rng = np.random.default_rng(seed)
    noisy = {
        k: v + torch.from_numpy(rng.normal(0, scale, v.shape).astype(np.float32)) * v.abs().mean()
        for k, v in state.items()
    }
    net.load_state_dict(noisy)
    meta = {k: v for k, v in meta.items() if k not in ("format", "weights")}
    return model_lib.save(ws.models, net, meta)["weights"]["sha256"]


def write_record(path: Path, name: str, version: str, sha256: str, metrics: dict | None = None) -> Path:
    """A promotion record as `mlops promote` writes it (the tests stand in for promote)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(
        yaml.safe_dump(
            {
                "name": name,
                "version": int(version),
                "uri": f"models:/{name}/{version}",
                "sha256": sha256,
                "metrics": metrics or {},
                "git_sha": "0" * 40,
                "promoted_at": "2026-01-01T00:00:00Z",
                "promoted_by": "tests",
                "previous": None,
            }
        )
    )
    return path


@pytest.fixture
def unique_name() -> str:
    """A registered model name no other test uses (the server is shared by the session)."""
    return f"churn-test-{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="session")
def gated(pipeline: Workspace, tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    """The demo pipeline plus a passing gate: ready to register. Read-only."""
    ws = copy_workspace(pipeline, tmp_path_factory.mktemp("gated") / "ws")
    assert ws.mlops(*gate_args(ws)) == 0
    return ws


@pytest.fixture(scope="session")
def degraded(pipeline: Workspace, tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    """A clearly worse candidate: retrained for 1 epoch with 2 hidden units and a tiny learning rate."""
    ws = copy_workspace(pipeline, tmp_path_factory.mktemp("degraded") / "ws")
    data = yaml.safe_load(ws.params.read_text())
    data["train"].update({"epochs": 1, "hidden": [2], "lr": 0.002})
    ws.params.write_text(yaml.safe_dump(data, sort_keys=False))
    assert ws.mlops("train", "--data-dir", str(ws.processed), "--model-dir", str(ws.models)) == 0
    assert ws.mlops(*evaluate_args(ws)) == 0
    return ws
