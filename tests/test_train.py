"""train: determinism (same sha256 twice), early stopping, MLflow tracking, the artifact contract."""

from __future__ import annotations

import json

import mlflow
import pytest
from safetensors import safe_open

from mlops import files
from mlops import model as model_lib
from mlops.stages import train


def test_model_files_and_metadata_contract(pipeline, params):
    meta = json.loads((pipeline.models / "model.json").read_text())
    assert sorted(p.name for p in pipeline.models.iterdir()) == [
        "model.json",
        "model.onnx",
        "model.safetensors",
    ]
    assert meta["weights"]["sha256"] == files.file_digest(pipeline.models / "model.safetensors")
    assert meta["onnx"] == {
        "file": "model.onnx",
        "sha256": files.file_digest(pipeline.models / "model.onnx"),
        "opset": params.train.onnx.opset,
        "exporter": params.train.onnx.exporter,
        "input": "x",
        "output": "probability",
    }
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
    assert (tmp_path / "a/model.onnx").read_bytes() == (tmp_path / "b/model.onnx").read_bytes()
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
    best = train.kept_epoch(history, p.early_stopping.min_delta)
    assert len(history) < 200  # stopped early
    assert len(history) - best["epoch"] == p.early_stopping.patience
    import torch

    with torch.inference_mode():
        restored = float(torch.nn.functional.binary_cross_entropy_with_logits(net(splits[1].x), splits[1].y))
    assert restored == pytest.approx(best["valid_loss"], rel=1e-6)


def test_kept_epoch_is_the_last_gain_above_min_delta():
    # model.json's best_epoch/best_valid_loss describe the saved weights: a later, smaller gain than
    # min_delta neither resets patience nor replaces the kept weights
    rows = [0.5, 0.4, 0.39995, 0.41, 0.3]
    history = [{"epoch": i + 1, "train_loss": 0.0, "valid_loss": v} for i, v in enumerate(rows)]
    assert train.kept_epoch(history[:4], 1e-4)["epoch"] == 2
    assert train.kept_epoch(history[:4], 0.0)["epoch"] == 3
    assert train.kept_epoch(history, 1e-4)["epoch"] == 5


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
    assert artifacts == {"model/model.json", "model/model.safetensors", "model/model.onnx"}


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


def test_onnx_export_scores_as_the_network_for_every_batch_size(pipeline):
    """model.onnx (ONNX Runtime, dynamic batch axis) gives the torch network's probabilities."""
    import numpy as np

    from mlops import scorer

    torch_model, onnx_model = model_lib.load(pipeline.models), scorer.load_onnx(pipeline.models)
    x = np.random.default_rng(0).normal(size=(300, torch_model.preprocessor.width)).astype(np.float32)
    for rows in (1, 7, 64, 300):
        got, want = onnx_model.forward(x[:rows]), torch_model.forward(x[:rows])
        assert got.shape == (rows,) and got.dtype == np.float64
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)


@pytest.mark.slow
@pytest.mark.parametrize("activation", ["gelu", "tanh"])
def test_both_exporters_export_every_activation(activation, tmp_path):
    """The torchscript and dynamo exporters both give ONNX Runtime graphs that match torch."""
    import numpy as np
    import torch

    from mlops import scorer

    torch.manual_seed(0)
    net = model_lib.MLP(6, [8, 4], activation, 0.2).eval()
    meta = {"architecture": {"input_dim": 6, "hidden": [8, 4], "activation": activation, "dropout": 0.2}}
    x = np.random.default_rng(1).normal(size=(16, 6)).astype(np.float32)
    for exporter in ("torchscript", "dynamo"):
        out = tmp_path / exporter
        saved = model_lib.save(out, net, meta, exporter=exporter, opset=18)
        assert saved["onnx"]["exporter"] == exporter
        session = scorer.onnx_session((out / "model.onnx").read_bytes(), threads=1)
        got = session.run(None, {"x": x})[0]
        with torch.inference_mode():
            want = torch.sigmoid(net(torch.from_numpy(x))).numpy()
        np.testing.assert_allclose(got, want, rtol=0, atol=1e-6)


def test_exporter_none_writes_no_onnx_file(tmp_path):
    net = model_lib.MLP(3, [4]).eval()
    meta = {"architecture": {"input_dim": 3, "hidden": [4], "activation": "relu", "dropout": 0.0}}
    model_lib.save(tmp_path, net, meta, exporter="torchscript")
    saved = model_lib.save(tmp_path, net, meta, exporter="none")
    assert saved["onnx"] is None and not (tmp_path / "model.onnx").exists()


def test_set_determinism_turns_on_deterministic_kernels():
    import torch

    torch.use_deterministic_algorithms(False)
    try:
        train.set_determinism(0, 1)
        assert torch.are_deterministic_algorithms_enabled()
    finally:
        torch.use_deterministic_algorithms(False)
