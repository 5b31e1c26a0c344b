"""Project fixtures: the shipped params.yaml and the pipeline outputs it produces.

Project tests check the team's data, pipeline and model, so they read the repository's own params.yaml
(never the template's fixture params) and derive every expectation from it. While params.yaml equals
the template's demo params, the outputs are the session's `pipeline` (the same run); otherwise those of
`dvc repro` in the repository when DVC reports them current, or (a fresh clone, CI, stale outputs) the
stages run once per session in a temp workspace with the same params.yaml.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time

import httpx
import pandas as pd
import pytest

from mlops import model as model_lib
from mlops.config import Params, load_params

from conftest import FIXTURE_PARAMS, REPO, Workspace, free_port

PROJECT_PARAMS = REPO / "params.yaml"


@pytest.fixture(scope="session")
def project_params() -> Params:
    """The repository's params.yaml, typed."""
    return load_params(PROJECT_PARAMS)


def _dvc_outputs_current() -> bool:
    """True when `dvc repro` outputs up to `evaluate` exist in the repository and match dvc.lock (as of
    the last `dvc repro`: a stage marked always_changed, such as a source fingerprint, does not count)."""
    if not (REPO / "dvc.lock").exists():
        return False
    proc = subprocess.run(
        [sys.executable, "-m", "dvc", "status", "--json", "--with-deps", "evaluate"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=300,
    )
    if proc.returncode != 0:
        return False
    status = json.loads(proc.stdout or "null")
    # an `always_changed` stage (the source fingerprint) is never "up to date"; everything else must be
    return isinstance(status, dict) and all(v == ["always changed"] for v in status.values())


@pytest.fixture(scope="session")
def project(tmp_path_factory: pytest.TempPathFactory, request: pytest.FixtureRequest) -> Workspace:
    """The project's pipeline outputs (read-only for tests)."""
    if load_params(PROJECT_PARAMS) == load_params(FIXTURE_PARAMS):
        # params.yaml is still the template's demo: the session's `pipeline` is this very run (same params,
        # code and data; training is deterministic), so it is not run a second time
        return request.getfixturevalue("pipeline")
    if _dvc_outputs_current():
        return Workspace(REPO)
    ws = Workspace(tmp_path_factory.mktemp("project"))
    shutil.copy(PROJECT_PARAMS, ws.params)
    with contextlib.chdir(REPO):  # relative `ingest.file.uri` paths are relative to the repository
        ws.run_all()
    return ws


@pytest.fixture(scope="session")
def raw(project: Workspace) -> pd.DataFrame:
    """The ingested table."""
    return pd.read_parquet(project.raw)


@pytest.fixture(scope="session")
def splits(project: Workspace) -> dict[str, pd.DataFrame]:
    """The encoded train/valid/test splits written by featurize."""
    return {
        name: pd.read_parquet(project.processed / f"{name}.parquet") for name in ("train", "valid", "test")
    }


@pytest.fixture(scope="session")
def model(project: Workspace) -> model_lib.LoadedModel:
    """The trained model, verified on load."""
    return model_lib.load(project.models)


@pytest.fixture(scope="session")
def split_rows(raw, splits, project_params) -> pd.DataFrame:
    """Raw rows of the test split (the id joined back to the ingested table)."""
    ids = splits["test"][[project_params.schema_.id]]
    rows = ids.merge(raw, on=project_params.schema_.id, how="left", validate="one_to_one")
    assert len(rows) == len(ids) and len(rows) > 0
    return rows


@pytest.fixture(scope="session")
def served(project: Workspace, tmp_path_factory: pytest.TempPathFactory):
    """A real `mlops serve` of the project's model with the project's params.yaml; yields its URL."""
    root = tmp_path_factory.mktemp(
        "project-serve"
    )  # the server's cwd: a relative prediction-log dir lands here
    port = free_port()
    log = root / "server.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "mlops.cli", "--params", str(PROJECT_PARAMS), "serve"]
            + ["--model-dir", str(project.models), "--port", str(port)],
            cwd=root,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline, ready = time.monotonic() + 60, 0
        while ready < 6:  # several answers in a row: every worker has loaded the model
            assert proc.poll() is None, f"mlops serve exited {proc.returncode}: {log.read_text()[-3000:]}"
            try:
                ok = httpx.get(f"{url}/v2/health/ready", timeout=2).status_code == 200
            except httpx.TransportError:
                ok = False
            ready = ready + 1 if ok else 0
            assert time.monotonic() < deadline, f"mlops serve not ready in 60 s: {log.read_text()[-3000:]}"
            time.sleep(0.05)
        yield url
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
