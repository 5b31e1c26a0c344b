"""Fixtures of the fault suite: a registry (real `mlflow server`) that tests may crash and restart, a
gated copy of the session's pipeline."""

from __future__ import annotations

import pytest
from registry.conftest import copy_workspace, gate_args, set_gate

from .injectors import MlflowServer
from conftest import Workspace


@pytest.fixture(scope="session")
def registry_server(tmp_path_factory: pytest.TempPathFactory):
    """A real MLflow server only the fault tests use: they kill it (SIGKILL of its process group) and
    start it again on the same port and store. Each test calls `ensure_up()` first."""
    server = MlflowServer(tmp_path_factory.mktemp("fault-registry"))
    server.start()
    yield server
    server.kill()


@pytest.fixture(scope="session")
def gated_model(pipeline: Workspace, tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    """The session's trained model with a passing gate, the latency budgets widened (these tests are
    about faults, and a loaded machine must not fail the gate on timing). Read-only."""
    ws = copy_workspace(pipeline, tmp_path_factory.mktemp("fault-gated") / "ws")
    set_gate(ws, **{"latency.p95_ms_single": 10000.0, "latency.p95_ms_batch": 10000.0})
    assert ws.mlops(*gate_args(ws)) == 0
    return ws
