"""A registered version loads where MLflow users load it: a clean environment that has only its requirements.

What is isolated, exactly: a new virtualenv (`python -m venv --without-pip`, no system site-packages)
into which pip installs the registered version's own `requirements.txt`, read from the registry, and
nothing else (pip resolves their dependencies as it would for any MLflow user, with this machine's pip
configuration). This package is not installed there: the test asserts that `mlops` is not importable
before the model is loaded. The consumer runs with `python -I` (no PYTHONPATH, no user site, neither the
script's directory nor the working directory on sys.path) in a temp directory outside the repository,
with an environment holding only PATH, HOME and MLFLOW_TRACKING_URI. So the project code the model needs
can come only from the code bundled in the model version.

Building the environment takes one to four minutes (MLflow's dependencies, ONNX Runtime). Set
`MLOPS_TEST_CONSUMER_ENV=<dir>` to keep it between runs: it is reused only while the model's
requirements.txt is unchanged, else rebuilt.

The model is registered on a real `mlflow server` (127.0.0.1) and loaded by `models:/<name>/<version>`;
`mlflow models serve --env-manager local` from the same clean environment serves it and answers
`/invocations`. The rows are real rows of the test split with the feature columns of model.json.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

import mlflow
import numpy as np
import pytest

from mlops import pyfunc_bundle, scorer

from .conftest import register_args, split_rows
from conftest import free_port

pytestmark = [pytest.mark.slow, pytest.mark.e2e]

CONSUMER = r"""
import importlib.metadata, importlib.util, json, sys

import pandas as pd

assert importlib.util.find_spec("mlops") is None, "mlops is importable before the model is loaded"
dists = {d.metadata["Name"].lower() for d in importlib.metadata.distributions()}
import mlflow

model = mlflow.pyfunc.load_model(sys.argv[1])
out = model.predict(pd.read_parquet(sys.argv[2]))
import mlops

json.dump(
    {
        "probability": out["probability"].tolist(),
        "label": out["label"].tolist(),
        "mlops_file": mlops.__file__,
        "modules": sorted(m for m in sys.modules if m.split(".")[0] == "mlops"),
        "dists": sorted(dists),
        "torch_imported": "torch" in sys.modules,
    },
    open(sys.argv[3], "w"),
)
"""


@pytest.fixture(scope="module")
def registered(gated, mlflow_server):
    """The gated demo model registered on the real MLflow server; yields its models:/ URI."""
    name = f"consumer-{os.getpid()}"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", mlflow_server)
        assert gated.mlops(*register_args(gated, name)) == 0
    return f"models:/{name}/1"


@pytest.fixture(scope="module")
def requirements(registered, mlflow_server, tmp_path_factory) -> str:
    """The registered version's requirements.txt, as a consumer downloads it."""
    dest = tmp_path_factory.mktemp("consumer-model")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", mlflow_server)
        local = Path(mlflow.artifacts.download_artifacts(registered, dst_path=str(dest)))
    return (local / "requirements.txt").read_text()


@pytest.fixture(scope="module")
def consumer_env(requirements):
    """A clean virtualenv holding the registered version's requirements only; yields its bin directory."""
    keep = os.environ.get("MLOPS_TEST_CONSUMER_ENV")
    root = Path(keep) if keep else Path(tempfile.mkdtemp(prefix="mlops-consumer-env-"))
    stamp = root / ".mlops-requirements.txt"
    if not (stamp.is_file() and stamp.read_text() == requirements):
        shutil.rmtree(root, ignore_errors=True)
        subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(root)], check=True, timeout=120)
        (root / "requirements.txt").write_text(requirements)
        pip = [sys.executable, "-m", "pip", "--python", str(root / "bin/python"), "install", "--no-compile"]
        out = subprocess.run(
            [*pip, "-q", "-r", str(root / "requirements.txt")], capture_output=True, text=True, timeout=1500
        )
        assert out.returncode == 0, (
            "pip install of the model's requirements failed (they must be installable here, as for any "
            "MLflow user: a package index, or PIP_FIND_LINKS with their wheels where pip runs offline):\n"
            + out.stderr[-3000:]
        )
        stamp.write_text(requirements)
    yield root / "bin"
    if not keep:
        shutil.rmtree(root, ignore_errors=True)


def consumer_environ(env_bin: Path, server: str, home: Path) -> dict[str, str]:
    """A consumer's shell with the clean environment activated: no PYTHONPATH, only the tracking URI set.

    (`mlflow models serve` starts `uvicorn` from PATH, as it does in an activated virtualenv.)
    """
    return {
        "PATH": f"{env_bin}:/usr/local/bin:/usr/bin:/bin",
        "VIRTUAL_ENV": str(env_bin.parent),
        "HOME": str(home),
        "MLFLOW_TRACKING_URI": server,
        "PYTHONNOUSERSITE": "1",
    }


def stop_group(proc: subprocess.Popen) -> None:
    """Stop the server and the workers it started (its own process group)."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
    except ProcessLookupError:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)


def expected(ws, rows):
    model = scorer.load_onnx(ws.models)  # what the pyfunc serves (torch parity: the gate's rule)
    proba = model.predict_proba(rows)
    return proba, list(model.predict_label(proba))


def test_load_model_and_predict_in_a_clean_environment(
    gated, registered, consumer_env, mlflow_server, tmp_path
):
    rows = split_rows(gated)
    rows.to_parquet(tmp_path / "rows.parquet", index=False)
    (tmp_path / "consumer.py").write_text(CONSUMER)
    out = subprocess.run(
        [
            str(consumer_env / "python"),
            "-I",
            str(tmp_path / "consumer.py"),
            registered,
            str(tmp_path / "rows.parquet"),
            str(tmp_path / "out.json"),
        ],
        cwd=tmp_path,
        env=consumer_environ(consumer_env, mlflow_server, tmp_path),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stderr[-4000:]
    result = json.loads((tmp_path / "out.json").read_text())
    assert "mlops-gitops-template" not in result["dists"]
    # the pyfunc runs the ONNX export on ONNX Runtime: torch is neither installed nor imported
    assert "onnxruntime" in result["dists"] and "torch" not in result["dists"], result["dists"]
    assert not result["torch_imported"]
    # the project code came from the model version's bundled code, not from this checkout
    assert "/code/mlops/" in result["mlops_file"] and not result["mlops_file"].startswith(str(Path.cwd()))
    assert set(result["modules"]) <= set(pyfunc_bundle.import_graph().modules), result["modules"]
    proba, labels = expected(gated, rows)
    np.testing.assert_allclose(result["probability"], proba, rtol=1e-6)
    assert result["label"] == labels


def test_mlflow_models_serve_answers_invocations(gated, registered, consumer_env, mlflow_server, tmp_path):
    port = free_port()
    log = open(tmp_path / "serve.log", "wb")
    proc = subprocess.Popen(
        [
            str(consumer_env / "mlflow"),
            "models",
            "serve",
            "-m",
            registered,
            "--env-manager",
            "local",
            "-h",
            "127.0.0.1",
            "-p",
            str(port),
            "-w",
            "1",
        ],
        cwd=tmp_path,
        env=consumer_environ(consumer_env, mlflow_server, tmp_path),
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 240
        while True:
            assert proc.poll() is None, (tmp_path / "serve.log").read_text()[-4000:]
            try:
                with urllib.request.urlopen(f"{url}/ping", timeout=2) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, (tmp_path / "serve.log").read_text()[-4000:]
            time.sleep(0.5)
        rows = split_rows(gated)
        body = json.dumps({"dataframe_split": json.loads(rows.to_json(orient="split", index=False))})
        req = urllib.request.Request(
            f"{url}/invocations", data=body.encode(), headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(req, timeout=60) as resp:
            assert resp.status == 200
            predictions = json.loads(resp.read())["predictions"]
    finally:
        stop_group(proc)
        log.close()
    proba, labels = expected(gated, rows)
    assert len(predictions) == len(rows)
    np.testing.assert_allclose([p["probability"] for p in predictions], proba, rtol=1e-6)
    assert [p["label"] for p in predictions] == labels
