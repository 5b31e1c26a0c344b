"""`mlops register` and `mlops fetch-model` against a real MLflow server (and the embedded SQLite store)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import mlflow
import numpy as np
import pytest
from mlflow import MlflowClient

from mlops import model as model_lib
from mlops import scorer

from .conftest import copy_workspace, gate_args, register_args, set_gate, split_rows
from .test_no_pickle import assert_nothing_unpickled, audit

pytestmark = pytest.mark.slow


def sha_of(ws) -> str:
    return json.loads((ws.models / "model.json").read_text())["weights"]["sha256"]


def test_register_tags_alias_and_idempotence(gated, server_uri, unique_name, capsys, tmp_path):
    (tmp_path / "dvc.lock").write_text("schema: '2.0'\n")
    ws = copy_workspace(gated, tmp_path / "ws")
    shutil.copy(tmp_path / "dvc.lock", ws.root / "dvc.lock")
    capsys.readouterr()
    assert ws.mlops(*register_args(ws, unique_name)) == 0
    first = json.loads(capsys.readouterr().out)
    assert first == {
        "name": unique_name,
        "version": "1",
        "uri": f"models:/{unique_name}/1",
        "gate": "passed",
        "created": True,
        "images": {},  # registered without --image (a local `make register`): no image.* tags
    }

    client = MlflowClient(server_uri)
    mv = client.get_model_version(unique_name, "1")
    metrics = json.loads(ws.metrics.read_text())["test"]
    assert mv.tags["weights_sha256"] == sha_of(ws)
    assert mv.tags["gate"] == "passed"
    assert mv.tags["data_md5"] == json.loads((ws.models / "model.json").read_text())["data_md5"]
    assert len(mv.tags["params_hash"]) == 64 and len(mv.tags["dvc_lock_md5"]) == 32
    assert len(mv.tags["git_sha"]) == 40 or mv.tags["git_sha"] == "unknown"
    assert float(mv.tags["metric.roc_auc"]) == pytest.approx(metrics["roc_auc"], abs=1e-5)
    assert client.get_registered_model(unique_name).aliases == {"candidate": "1"}

    # the same weights again: no duplicate version, alias unchanged
    assert ws.mlops(*register_args(ws, unique_name)) == 0
    again = json.loads(capsys.readouterr().out)
    assert again["version"] == "1" and again["created"] is False
    assert len(client.search_model_versions(f"name = '{unique_name}'")) == 1


def test_registered_model_is_a_pickle_free_pyfunc(gated, server_uri, unique_name, tmp_path):
    assert gated.mlops(*register_args(gated, unique_name)) == 0
    local = mlflow.artifacts.download_artifacts(f"models:/{unique_name}/1", dst_path=str(tmp_path / "dl"))
    names = {p.name for p in (tmp_path / "dl").rglob("*") if p.is_file()}
    assert {"model.safetensors", "model.onnx", "model.json", "MLmodel", "pyfunc_model.py"} <= names
    assert not [n for n in names if n.endswith((".pkl", ".pickle", ".cloudpickle"))], names
    assert "pyfunc_model.py" in (tmp_path / "dl" / "MLmodel").read_text()

    rows = split_rows(gated)  # test-split rows with model.json's feature columns
    model = scorer.load_onnx(gated.models)  # the pyfunc serves the ONNX export
    expected = model.predict_proba(rows)
    out = mlflow.pyfunc.load_model(local).predict(rows)
    np.testing.assert_allclose(out["probability"].to_numpy(), expected, rtol=1e-6)
    assert list(out["label"]) == list(model.predict_label(expected))
    assert set(out["label"]) <= set(model.metadata["label"]["classes"])

    # loading it in a fresh process unpickles nothing (MLflow would cloudpickle a PythonModel instance)
    seen = audit("pyfunc", Path(local), rows, tmp_path)
    assert "error" not in seen, seen["error"]
    np.testing.assert_allclose(seen["probability"], expected, rtol=1e-6)
    assert_nothing_unpickled(seen)


def test_failed_gate_is_refused_unless_allowed(pipeline, server_uri, unique_name, tmp_path, capsys):
    ws = copy_workspace(pipeline, tmp_path / "ws")
    auc = json.loads(ws.metrics.read_text())["test"]["roc_auc"]  # thresholds either side of the model's
    set_gate(ws, **{"metrics.min": {"roc_auc": min(1.0, auc + 0.05)}})
    assert ws.mlops(*gate_args(ws)) == 4
    capsys.readouterr()
    assert ws.mlops(*register_args(ws, unique_name)) == 6
    assert "gate did not pass" in capsys.readouterr().err
    client = MlflowClient(server_uri)
    assert client.search_model_versions(f"name = '{unique_name}'") == []

    assert ws.mlops(*register_args(ws, unique_name, "--allow-failed")) == 0
    assert client.get_model_version(unique_name, "1").tags["gate"] == "failed"

    # the same weights pass a later gate: no new version, the tag follows the newest verdict
    set_gate(ws, **{"metrics.min": {"roc_auc": auc - 0.05}})
    assert ws.mlops(*gate_args(ws)) == 0
    assert ws.mlops(*register_args(ws, unique_name)) == 0
    assert client.get_model_version(unique_name, "1").tags["gate"] == "passed"
    assert len(client.search_model_versions(f"name = '{unique_name}'")) == 1


def test_tampered_weights_are_refused(gated, server_uri, unique_name, tmp_path, capsys):
    ws = copy_workspace(gated, tmp_path / "ws")
    weights = ws.models / "model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    capsys.readouterr()
    assert ws.mlops(*register_args(ws, unique_name)) == 6
    assert "does not match model.json" in capsys.readouterr().err
    assert MlflowClient(server_uri).search_model_versions(f"name = '{unique_name}'") == []


def test_gate_report_of_other_weights_is_refused(gated, degraded, server_uri, unique_name, tmp_path, capsys):
    ws = copy_workspace(degraded, tmp_path / "ws")
    shutil.copy(gated.root / "reports/gate.json", ws.root / "reports/gate.json")
    capsys.readouterr()
    assert ws.mlops(*register_args(ws, unique_name)) == 6
    assert "rerun `mlops gate`" in capsys.readouterr().err


def test_register_on_embedded_store(gated, tmp_path, monkeypatch, unique_name):
    """No server: the default SQLite store in the workspace (artifacts under ./mlartifacts)."""
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.chdir(tmp_path)
    assert gated.mlops(*register_args(gated, unique_name)) == 0
    assert (tmp_path / "mlflow.db").is_file() and (tmp_path / "mlartifacts").is_dir()
    client = MlflowClient("sqlite:///mlflow.db")
    # the SQL store returns alias versions as int, the REST client as str
    assert {k: str(v) for k, v in client.get_registered_model(unique_name).aliases.items()} == {
        "candidate": "1"
    }
    assert gated.mlops(*register_args(gated, unique_name)) == 0
    assert len(client.search_model_versions(f"name = '{unique_name}'")) == 1
    dest = tmp_path / "fetched"
    assert (
        gated.mlops("fetch-model", "--name", unique_name, "--version", "candidate", "--dest", str(dest)) == 0
    )
    assert model_lib.load(dest).metadata["weights"]["sha256"] == sha_of(gated)


# ---------------------------------------------------------------- fetch-model
@pytest.fixture
def registered(gated, server_uri, unique_name) -> str:
    assert gated.mlops(*register_args(gated, unique_name)) == 0
    return unique_name


def test_fetch_model_places_verified_files(gated, registered, tmp_path, capsys):
    dest = tmp_path / "mnt" / "model"
    capsys.readouterr()
    # no params.yaml needed (the init container has none)
    from mlops import cli

    assert (
        cli.main(
            [
                "--params",
                str(tmp_path / "absent.yaml"),
                "fetch-model",
                "--name",
                registered,
                "--version",
                "1",
                "--dest",
                str(dest),
                "--json",
            ]
        )
        == 0
    )
    out = json.loads(capsys.readouterr().out)
    assert out["sha256"] == sha_of(gated) and out["version"] == "1"
    from mlops import artifact

    model_files = artifact.file_names(model_lib.read_metadata(gated.models))  # weights, ONNX, model.json
    expected = sorted([*model_files, "reference.parquet", "registry.json"])
    assert sorted(p.name for p in dest.iterdir()) == expected
    # readable by the serving container's user, whoever the init container ran as (0644 under umask 022)
    from mlops import files

    expected_mode = 0o666 & ~files.current_umask()
    assert {p.name: p.stat().st_mode & 0o777 for p in dest.iterdir()} == {
        p.name: expected_mode for p in dest.iterdir()
    }
    assert model_lib.load(dest).metadata["weights"]["sha256"] == sha_of(gated)
    # by alias, into the same (now populated) directory
    assert cli.main(["fetch-model", "--name", registered, "--version", "candidate", "--dest", str(dest)]) == 0


def test_fetched_drift_reference_is_a_sample_of_the_training_split(gated, registered, params, tmp_path):
    """reference.parquet: raw features + label of training rows (capped at drift.reference_rows, no test
    or validation row), and the registered model's probability on each of them."""
    import pandas as pd

    from mlops import cli

    dest = tmp_path / "model"
    assert cli.main(["fetch-model", "--name", registered, "--version", "1", "--dest", str(dest)]) == 0
    ref = pd.read_parquet(dest / "reference.parquet")
    meta = model_lib.read_metadata(dest)
    features = [f["name"] for f in meta["features"]]
    assert list(ref.columns) == [*features, meta["label"]["column"], "probability"]
    train = pd.read_parquet(gated.processed / "train.parquet")
    assert len(ref) == min(len(train), params.drift.reference_rows)
    raw = pd.read_parquet(gated.raw)
    train_raw = raw[raw[meta["id"]].isin(train[meta["id"]])][features]
    held_out = raw[~raw[meta["id"]].isin(train[meta["id"]])][features]
    key = lambda f: f.astype(str).agg("|".join, axis=1)  # noqa: E731 - a row's identity
    assert key(ref[features]).isin(set(key(train_raw))).all()
    assert not key(ref[features]).isin(set(key(held_out)) - set(key(train_raw))).any()
    proba = model_lib.load(dest).predict_proba({n: ref[n].to_numpy() for n in features})
    np.testing.assert_allclose(ref["probability"].to_numpy(), proba, rtol=0, atol=1e-6)


def test_version_carries_its_labelled_test_rows(gated, registered, tmp_path):
    """evaluation.parquet: every test-split row's raw columns and its 0/1 label, the rows `mlops promote`
    scores both models on; fetched only on request (the serving volume does without it)."""
    import pandas as pd

    from mlops import registry
    from mlops.labels import LABEL

    served = tmp_path / "served"
    registry.fetch_model(registered, "1", served)
    assert not (served / registry.EVALUATION).exists()
    dest = tmp_path / "model"
    registry.fetch_model(registered, "1", dest, evaluation=True)
    rows = pd.read_parquet(dest / registry.EVALUATION)
    meta = model_lib.read_metadata(dest)
    test = pd.read_parquet(gated.processed / "test.parquet")
    assert list(rows[meta["id"]]) == list(test[meta["id"]]) and list(rows[LABEL]) == list(test[LABEL])
    assert set(pd.read_parquet(gated.raw).columns) <= set(rows.columns)  # every raw column, not only inputs


@pytest.mark.parametrize("version", ["99", "no-such-alias"])
def test_fetch_missing_version_exits_5(registered, tmp_path, capsys, version):
    from mlops import cli

    dest = tmp_path / "dest"
    assert cli.main(["fetch-model", "--name", registered, "--version", version, "--dest", str(dest)]) == 5
    assert "not found" in capsys.readouterr().err
    assert not dest.exists() or not any(dest.iterdir())


def test_fetch_missing_model_exits_5(server_uri, tmp_path):
    from mlops import cli

    assert (
        cli.main(["fetch-model", "--name", "never-registered", "--version", "1", "--dest", str(tmp_path)])
        == 5
    )


def test_fetch_checksum_mismatch_exits_6_and_leaves_dest_alone(registered, server_uri, tmp_path, capsys):
    MlflowClient(server_uri).set_model_version_tag(registered, "1", "weights_sha256", "f" * 64)
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "model.json").write_text("previous")
    from mlops import cli

    assert cli.main(["fetch-model", "--name", registered, "--version", "1", "--dest", str(dest)]) == 6
    assert "weights_sha256" in capsys.readouterr().err
    assert [p.name for p in dest.iterdir()] == ["model.json"]
    assert (dest / "model.json").read_text() == "previous"


def test_fetch_refuses_a_version_whose_sha256_is_not_the_records(gated, registered, tmp_path, capsys):
    """The init container passes the promotion record's sha256: a registry version that disagrees (re-
    tagged, replaced) is refused with exit 6 and nothing placed; the matching one is fetched."""
    from mlops import cli

    dest = tmp_path / "dest"
    args = ["fetch-model", "--name", registered, "--version", "1", "--dest", str(dest), "--sha256"]
    assert cli.main([*args, "0" * 64]) == 6
    assert "differs from the expected" in capsys.readouterr().err
    assert not dest.exists() or not any(p.name.startswith("model") for p in dest.iterdir())
    assert cli.main([*args, sha_of(gated)]) == 0


def test_unreachable_registry_exits_5_without_credentials(tmp_path, monkeypatch, capsys):
    from mlops import cli

    uri = "http://ci-user:hunter2@127.0.0.1:9"  # pragma: allowlist secret
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    assert cli.main(["fetch-model", "--name", "m", "--version", "1", "--dest", str(tmp_path / "d")]) == 5
    err = capsys.readouterr().err
    assert "registry http://127.0.0.1:9 unavailable" in err and "hunter2" not in err and "ci-user" not in err
