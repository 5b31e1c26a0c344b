"""train: determinism (same sha256 twice), early stopping, MLflow tracking, the artifact contract."""

from __future__ import annotations

import json

import mlflow
import pytest
from safetensors import safe_open

from mlops import files, train
from mlops import model as model_lib


def test_model_files_and_metadata_contract(pipeline, params):
    meta = json.loads((pipeline.models / "model.json").read_text())
    assert sorted(p.name for p in pipeline.models.iterdir()) == ["model.json", "model.safetensors"]
    assert meta["weights"]["sha256"] == files.file_digest(pipeline.models / "model.safetensors")
    assert meta["data_md5"] == files.file_digest(pipeline.raw, "md5")
    assert [f["name"] for f in meta["features"]] == params.schema_.features
    contract = next(f for f in meta["features"] if f["name"] == "contract")
    assert contract == {
        "name": "contract",
        "dtype": "BYTES",
        "kind": "categorical",
        "nullable": False,
        "categories": ["Month-to-month", "One year", "Two year"],
    }
    assert meta["label"] == {"column": "churn", "classes": ["No", "Yes"], "positive": "Yes"}
    assert meta["architecture"]["hidden"] == params.train.hidden
    assert len(meta["params_hash"]) == 64 and meta["decision_threshold"] == params.train.decision_threshold


def test_weights_are_safetensors_with_the_format_tag(pipeline):
    """The weights parse as safetensors (no code) and carry the format tag model.load checks. That nothing
    on the serving path unpickles is tested by tests/registry/test_no_pickle.py (an audit and a planted,
    live pickle payload)."""
    assert sorted(p.name for p in pipeline.models.iterdir()) == ["model.json", "model.safetensors"]
    with safe_open(str(pipeline.models / "model.safetensors"), framework="pt") as f:  # parses, no code
        assert f.metadata() == {"format": model_lib.FORMAT}


def test_weights_that_are_not_safetensors_are_a_clear_model_error(pipeline, tmp_path):
    import hashlib
    import json
    import shutil

    from mlops.errors import ModelNotReady

    broken = tmp_path / "models"
    shutil.copytree(pipeline.models, broken)
    (broken / "model.safetensors").write_bytes(b"not safetensors at all")
    meta = json.loads((broken / "model.json").read_text())
    meta["weights"]["sha256"] = hashlib.sha256(b"not safetensors at all").hexdigest()
    (broken / "model.json").write_text(json.dumps(meta))
    with pytest.raises(ModelNotReady, match="not a valid safetensors file"):
        model_lib.load(broken)


@pytest.mark.slow
def test_two_runs_give_byte_identical_weights(pipeline, params, tmp_path):
    meta = train.run(params.train, pipeline.processed, tmp_path / "a", "hash", {})
    again = train.run(params.train, pipeline.processed, tmp_path / "b", "hash", {})
    assert meta["weights"]["sha256"] == again["weights"]["sha256"]
    assert (tmp_path / "a/model.safetensors").read_bytes() == (tmp_path / "b/model.safetensors").read_bytes()
    # and the same as the pipeline's own run of the same params
    assert (
        meta["weights"]["sha256"]
        == json.loads((pipeline.models / "model.json").read_text())["weights"]["sha256"]
    )


def test_seed_changes_the_weights(pipeline, params, tmp_path):
    other = params.train.model_copy(update={"seed": params.train.seed + 1, "epochs": 2})
    base = params.train.model_copy(update={"epochs": 2})
    a = train.fit(
        *(
            train.load_split(pipeline.processed / f"{s}.parquet", _names(pipeline))
            for s in ("train", "valid")
        ),
        base,
    )
    b = train.fit(
        *(
            train.load_split(pipeline.processed / f"{s}.parquet", _names(pipeline))
            for s in ("train", "valid")
        ),
        other,
    )
    assert not all(
        (x == y).all() for x, y in zip(a[0].state_dict().values(), b[0].state_dict().values(), strict=True)
    )


def _names(pipeline) -> list[str]:
    return json.loads((pipeline.processed / "preprocess.json").read_text())["feature_names"]


def test_early_stopping_keeps_the_best_epoch(pipeline, params):
    splits = [
        train.load_split(pipeline.processed / f"{s}.parquet", _names(pipeline)) for s in ("train", "valid")
    ]
    p = params.train.model_copy(update={"epochs": 200})
    net, history = train.fit(*splits, p)
    best = min(history, key=lambda r: r["valid_loss"])
    assert len(history) < 200  # stopped early
    assert len(history) - best["epoch"] == p.early_stopping.patience
    import torch

    with torch.inference_mode():
        restored = float(torch.nn.functional.binary_cross_entropy_with_logits(net(splits[1].x), splits[1].y))
    assert restored == pytest.approx(best["valid_loss"], rel=1e-6)


def test_run_is_tracked_in_mlflow(pipeline, params):
    meta = json.loads((pipeline.models / "model.json").read_text())
    mlflow.set_tracking_uri(__import__("os").environ["MLFLOW_TRACKING_URI"])
    runs = mlflow.search_runs(
        experiment_names=[params.train.experiment],
        filter_string=f"tags.weights_sha256 = '{meta['weights']['sha256']}' and attributes.run_name LIKE 'train-%'",
        output_format="list",
    )
    assert runs, "the pipeline's training run is not in MLflow"
    run = runs[-1]
    assert run.data.params["train.lr"] == str(params.train.lr)
    assert run.data.tags["params_hash"] == meta["params_hash"]
    history = mlflow.tracking.MlflowClient().get_metric_history(run.info.run_id, "valid_loss")
    assert [m.step for m in history] == list(range(1, meta["training"]["epochs_run"] + 1))
    artifacts = {a.path for a in mlflow.tracking.MlflowClient().list_artifacts(run.info.run_id, "model")}
    assert artifacts == {"model/model.json", "model/model.safetensors"}


def test_tensorboard_logs_behind_a_param(pipeline, params, tmp_path):
    p = params.train.model_copy(update={"tensorboard": True, "epochs": 2})
    train.run(p, pipeline.processed, tmp_path / "m", "hash", {}, tensorboard_dir=tmp_path / "tb")
    events = list((tmp_path / "tb").rglob("events.out.tfevents.*"))
    assert events and events[0].stat().st_size > 0


def test_missing_inputs_are_data_errors(params, tmp_path):
    from mlops.errors import DataError

    with pytest.raises(DataError, match="preprocess.json: cannot read preprocessing state"):
        train.run(params.train, tmp_path, tmp_path / "m", "hash", {})
    assert not (tmp_path / "m").exists()
