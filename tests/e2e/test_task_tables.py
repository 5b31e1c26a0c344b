"""A multiclass and a regression table, each swapped in by editing only params.yaml, through the whole loop.

For each public table of tests/task_tables.py (modeldata/hpc_data: a job's run-time class, 4 classes;
ggplot2/diamonds: a price), in a copy of the repository whose only change is params.yaml:

1. `dvc repro` passes with gate rules of the task (per-class floors for multiclass);
2. the project tests (`pytest tests/project` in the copy: data contract, corruptions, splits, the
   declared behavioural expectations, a served model answering requests) are green;
3. `mlops serve` answers tritonclient, the standard OIP client, with the task's outputs (class
   probabilities and labels, or the predicted value), equal to the model's outputs in process, and logs
   them; `mlops drift` runs on those logged predictions against the model's training reference;
4. the champion comparison (`mlops.compare.review`, what `mlops report` runs) against the registered
   model: the candidate the pipeline trained passes (every compared metric equal), a degraded copy of it
   (seeded noise on its weights) fails on the task's metrics.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import task_tables
import yaml

from mlops.params_io import read_yaml

from conftest import copy_repository, free_port

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def run(cmd: list[str], cwd: Path, env: dict[str, str], timeout: int = 1500) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    e = dict(os.environ)
    e["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{e['PATH']}"
    e["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp_path / 'mlflow.db'}"
    return e


def swap(repo: Path, kind: str, env: dict[str, str]) -> None:
    params = repo / "params.yaml"
    data = read_yaml(params)
    task_tables.EDITS[kind](data)
    params.write_text(yaml.safe_dump(data, sort_keys=False))
    changed = run(["git", "status", "--porcelain", "--untracked-files=no"], repo, env).stdout.split()
    assert changed == ["M", "params.yaml"], f"the swap touched more than params.yaml: {changed}"


def serve(repo: Path, env: dict[str, str], log_dir: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "mlops",
            "serve",
            "--port",
            str(port),
            "--prediction-log-dir",
            str(log_dir),
            "--prediction-log-rate",
            "1.0",
        ],
        cwd=repo,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    import httpx

    deadline = time.monotonic() + 90
    while time.monotonic() < deadline:
        try:
            if httpx.get(f"http://127.0.0.1:{port}/v2/health/ready", timeout=1).status_code == 200:
                return proc, f"127.0.0.1:{port}"
        except httpx.HTTPError:
            pass
        assert proc.poll() is None, proc.stderr.read()[-3000:]
        time.sleep(0.3)
    proc.kill()
    raise AssertionError("mlops serve did not become ready in 90 s")


def triton_inputs(rows: pd.DataFrame, features: list[dict], binary: bool):
    import tritonclient.http as httpclient

    inputs = []
    for f in features:
        values = rows[f["name"]]
        if f["dtype"] == "BYTES":
            arr = np.array([str(v) for v in values], dtype=object)
        elif f["dtype"] == "INT64":
            arr = values.to_numpy(dtype=np.int64)
        else:
            arr = values.to_numpy(dtype=np.float64)
        tensor = httpclient.InferInput(f["name"], [len(rows)], f["dtype"])
        tensor.set_data_from_numpy(arr, binary_data=binary)
        inputs.append(tensor)
    return inputs


def ask(address: str, name: str, rows: pd.DataFrame, meta: dict, outputs: list[str], binary: bool):
    import tritonclient.http as httpclient

    client = httpclient.InferenceServerClient(address)
    try:
        requested = [httpclient.InferRequestedOutput(o, binary_data=binary) for o in outputs]
        result = client.infer(name, triton_inputs(rows, meta["features"], binary), outputs=requested)
        return {o: result.as_numpy(o) for o in outputs}
    finally:
        client.close()


@pytest.mark.parametrize("kind", ["multiclass", "regression"])
def test_a_table_of_another_task_runs_the_loop_by_editing_only_params_yaml(kind, tmp_path, env, monkeypatch):
    from mlops import compare, scorer
    from mlops.config import load_params
    from mlops.tables import split_rows

    repo = copy_repository(tmp_path / "repo")
    swap(repo, kind, env)

    # 1. the pipeline, with the task's gate
    repro = run(["dvc", "repro"], repo, env)
    assert repro.returncode == 0, f"dvc repro failed:\n{repro.stdout[-4000:]}\n{repro.stderr[-4000:]}"
    gate = json.loads((repo / "reports/gate.json").read_text())
    metrics = json.loads((repo / "reports/metrics.json").read_text())
    assert gate["passed"] and metrics["task"] == kind
    ids = {r["id"].split("[")[0] for r in gate["rules"]}
    if kind == "multiclass":
        assert {"metrics.min.accuracy", "metrics.min.macro_f1", "classes.min.recall"} <= ids
    else:
        assert {"metrics.min.r2", "metrics.max.rmse", "slices.min.r2"} <= ids

    # 2. the project tests a team runs on its own table
    tests = run([sys.executable, "-m", "pytest", "tests/project", "-q", "-p", "no:cacheprovider"], repo, env)
    log = tests.stdout + tests.stderr
    assert tests.returncode == 0 and " failed" not in log and " error" not in log, log[-6000:]

    # 3. the served model answers tritonclient with the task's outputs and logs them; drift reads the log
    meta = json.loads((repo / "models/model.json").read_text())
    model = scorer.load_onnx(repo / "models")
    rows = split_rows(repo / "data/raw/data.parquet", repo / "data/processed/test.parquet", meta["id"]).head(
        64
    )
    expected = model.predict_proba(rows)
    log_dir = tmp_path / "predictions"
    proc, address = serve(repo, env, log_dir)
    try:
        import httpx

        served_meta = httpx.get(f"http://{address}/v2/models/{meta['name']}").json()
        names = [o["name"] for o in served_meta["outputs"]]
        if kind == "multiclass":
            assert names == ["probabilities", "label"]
            for binary in (False, True):
                out = ask(address, meta["name"], rows, meta, names, binary)
                assert out["probabilities"].shape == (64, 4)
                assert np.allclose(out["probabilities"], expected, atol=1e-6)
                got = [v.decode() if isinstance(v, bytes) else str(v) for v in out["label"].ravel()]
                assert got == model.predict_label(expected)
        else:
            assert names == ["prediction"]
            for binary in (False, True):
                out = ask(address, meta["name"], rows, meta, names, binary)
                assert out["prediction"].shape == (64,)
                assert np.allclose(out["prediction"], expected, rtol=1e-6, atol=1e-3)
        # traffic for the drift window: 1,500 test rows (drift.min_rows is 1,000), 100 per request
        test_rows = split_rows(
            repo / "data/raw/data.parquet", repo / "data/processed/test.parquet", meta["id"]
        )
        traffic = pd.concat([test_rows, test_rows]).head(1500)
        for start in range(0, len(traffic), 100):
            ask(address, meta["name"], traffic.iloc[start : start + 100], meta, names, False)
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=60)
    logged = [
        json.loads(line) for f in sorted(log_dir.glob("*.jsonl")) for line in f.read_text().splitlines()
    ]
    assert len(logged) >= 1000
    first = logged[0]
    if kind == "multiclass":
        assert len(first["probabilities"]) == 4 and first["label"] in ("VF", "F", "M", "L")
    else:
        assert isinstance(first["prediction"], float) and "label" not in first
    drift = run(
        [
            "mlops",
            "drift",
            "--log-dir",
            str(log_dir),
            "--reference",
            "data/processed/train.parquet",
            "--data",
            "data/raw/data.parquet",
            "--out-dir",
            str(tmp_path / "drift"),
            "--window-hours",
            "1",
            "--json",
        ],
        repo,
        env,
        timeout=600,
    )
    assert drift.returncode in (0, 7), drift.stderr[-3000:]  # 7: drift found (the documented exit code)
    verdict = json.loads(drift.stdout)
    assert "insufficient" not in str(verdict["status"]), verdict
    report = tmp_path / "drift"
    assert any(report.iterdir()), "mlops drift wrote no report"

    # 4. the champion comparison: the trained candidate passes, a degraded one fails
    params = load_params(repo / "params.yaml")
    reg = run(
        [
            "mlops",
            "register",
            "--model-dir",
            "models",
            "--gate",
            "reports/gate.json",
            "--metrics",
            "reports/metrics.json",
            "--dvc-lock",
            "dvc.lock",
            "--data",
            "data/raw/data.parquet",
            "--train",
            "data/processed/train.parquet",
            "--test",
            "data/processed/test.parquet",
            "--name",
            f"{kind}-champion",
            "--json",
        ],
        repo,
        env,
    )
    assert reg.returncode == 0, reg.stderr[-3000:]
    registered = json.loads(reg.stdout)
    record = repo / "deploy/envs/production/model.yaml"
    record.write_text(
        yaml.safe_dump(
            {
                "name": f"{kind}-champion",
                "version": int(registered["version"]),
                "uri": f"models:/{kind}-champion/{registered['version']}",
                "sha256": meta["weights"]["sha256"],
                "metrics": {},
                "git_sha": "0" * 40,
                "promoted_at": "2026-12-07T00:00:00Z",
                "promoted_by": "tests",
                "previous": None,
            }
        )
    )
    monkeypatch.setenv("MLFLOW_TRACKING_URI", env["MLFLOW_TRACKING_URI"])
    bins = params.evaluate.calibration_bins
    data, test = repo / "data/raw/data.parquet", repo / "data/processed/test.parquet"
    same = compare.review(params.champion, bins, repo / "models", data, test, record)
    assert same is not None and same["passed"], same
    rows_by_metric = {r["metric"]: r for r in same["metrics"]}
    compared = set(params.champion.max_regression)
    assert compared <= set(rows_by_metric) and all(rows_by_metric[m]["diff"] == 0 for m in compared)
    degraded = degrade(repo / "models", tmp_path / "degraded")
    worse = compare.review(params.champion, bins, degraded, data, test, record)
    assert worse is not None and not worse["passed"] and set(worse["failed"]) <= compared, worse


def degrade(model_dir: Path, dest: Path) -> Path:
    """A copy of the model whose weights carry seeded noise: a clearly worse candidate."""
    import shutil

    import torch
    from safetensors.torch import load_file

    from mlops import model as model_lib

    shutil.copytree(model_dir, dest)
    meta = model_lib.read_metadata(dest)
    net = model_lib.build(meta["architecture"])
    state = load_file(str(dest / model_lib.WEIGHTS))
    gen = torch.Generator().manual_seed(0)
    net.load_state_dict(
        {k: v + torch.randn(v.shape, generator=gen) * v.abs().mean() for k, v in state.items()}
    )
    model_lib.save(dest, net, {k: v for k, v in meta.items() if k not in ("format", "weights", "onnx")})
    return dest
