"""train: encoded splits -> PyTorch MLP -> models/ (safetensors weights, ONNX export, model.json), in MLflow.

`fit()` is the pure core (tensors in, network and per-epoch history out; deterministic on CPU for a
given seed). Its randomness is three streams of `train.seed`: the initial weights (torch's global
generator), the batch order and the dropout masks (one dedicated generator each, advanced identically on
every DDP rank, so W ranks see exactly the batches and masks of one process: mlops.distributed).
`run()` does the I/O: reads data/processed, writes the model atomically, then logs params, per-epoch
metrics and the model files to MLflow (and TensorBoard when `train.tensorboard` is true).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from torch import nn

from mlops import artifact, distributed
from mlops import model as model_lib
from mlops.errors import ConfigError, DataError, MlopsError
from mlops.labels import LABEL
from mlops.params.base import Section, Sections
from mlops.params.featurize import FeaturizeParams
from mlops.params.schema import SchemaParams
from mlops.params.train import TrainParams
from mlops.paths import add_paths
from mlops.task import LOSSES, Task

log = logging.getLogger(__name__)


@dataclass
class Split:
    """Features and labels of one split as tensors."""

    x: torch.Tensor
    y: torch.Tensor


def load_split(
    path: Path, feature_names: list[str], task: Task | None = None, scale: dict[str, float] | None = None
) -> Split:
    """Read one encoded split, checking it has exactly the expected feature columns.

    The target tensor is float32 0/1 (binary), int64 class indices (multiclass, as cross-entropy takes
    them) or the standardized float32 target (regression: `(y - mean) / std`, preprocess.json
    `label.scale`)."""
    try:
        frame = pd.read_parquet(path)
    except FileNotFoundError as e:
        raise DataError(f"{path}: file not found; run `mlops featurize` first") from e
    missing = [c for c in [LABEL, *feature_names] if c not in frame.columns]
    if missing:
        raise DataError(f"{path}: missing column '{missing[0]}' (featurize output out of date?)")
    x = torch.from_numpy(frame[feature_names].to_numpy(dtype=np.float32))
    if task is not None and task.kind == "multiclass":
        return Split(x, torch.from_numpy(frame[LABEL].to_numpy(dtype=np.int64)))
    y = frame[LABEL].to_numpy(dtype=np.float64)
    if scale:
        y = (y - float(scale["mean"])) / float(scale["std"])
    return Split(x, torch.from_numpy(y.astype(np.float32)))


def loss_name(task: Task, loss: str) -> str:
    """The loss `train.loss` names for `task` (`auto`: the task's first, mlops.task.LOSSES).

    Raises:
        ConfigError: a loss that does not fit the task (bce on a regression target...), naming the key.
    """
    allowed = LOSSES[task.kind]
    if loss == "auto":
        return allowed[0]
    if loss not in allowed:
        raise ConfigError(
            f"train.loss: {loss!r} does not fit schema.task: {task.kind} (expected auto or {' | '.join(allowed)})"
        )
    return loss


def loss_functions(name: str) -> tuple[nn.Module, nn.Module]:
    """(mean loss, summed loss) modules for a loss name."""
    cls = {
        "bce": nn.BCEWithLogitsLoss,
        "cross_entropy": nn.CrossEntropyLoss,
        "mse": nn.MSELoss,
        "huber": nn.HuberLoss,
    }[name]
    return cls(), cls(reduction="sum")


def set_determinism(seed: int, threads: int) -> None:
    """Seed torch and force deterministic kernels (byte-identical weights across runs on CPU)."""
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # deterministic cuBLAS on CUDA
    torch.manual_seed(seed)
    # torch.use_deterministic_algorithms(True) = this eager-mode flag + the torch._inductor compiler's
    # `deterministic` setting, whose import costs ~2-3 s of train's start-up; training here never
    # compiles, so only the flag is set (torch is pinned exactly; the public call is the fallback)
    try:
        torch._C._set_deterministic_algorithms(True)
    except AttributeError:
        torch.use_deterministic_algorithms(True)
    torch.set_num_threads(threads)


def kept_epoch(history: list[dict[str, float]], min_delta: float) -> dict[str, float]:
    """The history row whose weights `fit` keeps: the last epoch that beat the best validation loss so far
    by more than `min_delta` (early stopping's rule; a smaller gain later does not count as progress).

    Args:
        history: `fit`'s per-epoch rows, in order.
        min_delta: `train.early_stopping.min_delta`.

    Returns:
        That row (the first epoch when none improved on it).
    """
    kept = history[0]
    for row in history[1:]:
        if row["valid_loss"] < kept["valid_loss"] - min_delta:
            kept = row
    return kept


def fit(
    train: Split,
    valid: Split,
    params: TrainParams,
    ctx: distributed.Context | None = None,
    outputs: int = 1,
    loss: str = "bce",
) -> tuple[model_lib.MLP, list[dict[str, float]]]:
    """Train the MLP with Adam and early stopping on the validation loss.

    Dropout masks come from `distributed.batch_masks` (one generator, whole global batch), not from the
    Dropout modules, so a DDP run of W processes trains the same weights as one process, dropout included.

    Args:
        train: training split.
        valid: validation split (early stopping, per-epoch metrics).
        params: the `train` section.
        ctx: the device and DDP process group (mlops.distributed); default one CPU process.
        outputs: the network's output width (mlops.task.Task.output_dim).
        loss: bce | cross_entropy | mse | huber (`loss_name`).

    Returns:
        The network with the weights of its best epoch (`kept_epoch`), and one history row per epoch run.
    """
    ctx = ctx or distributed.Context(1, 0, 0, None, torch.device("cpu"))
    set_determinism(params.seed, params.threads)
    net = model_lib.MLP(train.x.shape[1], list(params.hidden), params.activation, params.dropout, outputs)
    net.to(ctx.device)
    train = Split(train.x.to(ctx.device), train.y.to(ctx.device))
    valid = Split(valid.x.to(ctx.device), valid.y.to(ctx.device))
    # every rank holds the same initial weights (same seed); DDP all-reduces the gradients
    model: nn.Module = net
    if ctx.world_size > 1:
        model = nn.parallel.DistributedDataParallel(net)
    opt = torch.optim.Adam(net.parameters(), lr=params.lr, weight_decay=params.weight_decay, fused=True)
    loss_fn, sum_loss = loss_functions(loss)
    order = torch.Generator().manual_seed(params.seed)  # the same global batches on every rank
    noise = distributed.dropout_generator(params.seed)  # the same global batch masks on every rank
    n, bs = len(train.y), params.batch_size
    best_state = None
    history: list[dict[str, float]] = []
    for epoch in range(1, params.epochs + 1):
        net.train()
        perm = torch.randperm(n, generator=order).to(ctx.device)
        total = torch.zeros((), device=ctx.device)
        for start in range(0, n, bs):
            idx = perm[start : start + bs]
            opt.zero_grad(set_to_none=True)
            masks = distributed.batch_masks(net, len(idx), noise, ctx)
            if ctx.world_size > 1:
                # sum over this rank's rows / global batch rows, x W: DDP's mean over ranks then
                # equals the single-process mean gradient of the global batch (mlops.distributed)
                mine = distributed.shard(idx, ctx)
                part = sum_loss(model(train.x[mine], masks), train.y[mine])
                loss = part * (ctx.world_size / len(idx))
                loss.backward()
                total += part.detach()
            else:
                loss = loss_fn(model(train.x[idx], masks), train.y[idx])
                loss.backward()
                total += loss.detach() * len(idx)
            opt.step()
        total = distributed.reduce_sum(total, ctx)
        net.eval()
        with torch.inference_mode():
            valid_loss = float(loss_fn(net(valid.x), valid.y))
        history.append({"epoch": epoch, "train_loss": float(total) / n, "valid_loss": valid_loss})
        kept = kept_epoch(history, params.early_stopping.min_delta)
        if kept is history[-1]:
            best_state = {k: v.detach().clone() for k, v in net.state_dict().items()}
        elif epoch - kept["epoch"] >= params.early_stopping.patience:
            break
    assert best_state is not None
    net.load_state_dict(best_state)
    net.to("cpu").eval()
    return net, history


def _flatten(prefix: str, data: Any) -> dict[str, Any]:
    if isinstance(data, dict):
        out: dict[str, Any] = {}
        for k, v in data.items():
            out.update(_flatten(f"{prefix}.{k}" if prefix else str(k), v))
        return out
    return {prefix: json.dumps(data) if isinstance(data, list) else data}


def track(
    params: TrainParams,
    logged_params: dict[str, Any],
    meta: dict[str, Any],
    history: list[dict[str, float]],
    model_dir: Path,
) -> str:
    """Log one MLflow run: params, tags, per-epoch metrics, model files. Returns the run id."""
    import mlflow
    from mlflow.entities import Metric

    from mlops import tracking

    tracking.configure(params.experiment)
    # MLflow prints "View run at ..." links on stdout, which is reserved for machine-readable output
    with (
        contextlib.redirect_stdout(sys.stderr),
        mlflow.start_run(run_name=f"train-{meta['weights']['sha256'][:8]}") as active,
    ):
        mlflow.log_params(_flatten("", logged_params))
        mlflow.set_tags(
            {
                "params_hash": meta["params_hash"],
                "data_md5": meta["data_md5"],
                "weights_sha256": meta["weights"]["sha256"],
                "model_name": meta["name"],
            }
        )
        # one batched call instead of one round trip per epoch keeps tracking out of the training loop
        ts = int(active.info.start_time)
        metrics = [
            Metric(key, float(row[key]), ts, int(row["epoch"]))
            for row in history
            for key in ("train_loss", "valid_loss")
        ]
        client = mlflow.tracking.MlflowClient()
        for i in range(0, len(metrics), 500):
            client.log_batch(active.info.run_id, metrics=metrics[i : i + 500], synchronous=True)
        mlflow.log_metrics(
            {
                "best_valid_loss": meta["training"]["best_valid_loss"],
                "best_epoch": meta["training"]["best_epoch"],
            }
        )
        for name in artifact.file_names(meta):  # the artifact only, not stray files
            mlflow.log_artifact(str(model_dir / name), artifact_path="model")
        return active.info.run_id


def write_tensorboard(history: list[dict[str, float]], log_dir: Path) -> None:
    """Write per-epoch losses as TensorBoard scalars (needs the `tensorboard` extra)."""
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError as e:
        raise DataError(
            "train.tensorboard: true needs the tensorboard package (pip install .[tensorboard])"
        ) from e
    with SummaryWriter(log_dir=str(log_dir)) as writer:
        for row in history:
            writer.add_scalars("loss", {"train": row["train_loss"], "valid": row["valid_loss"]}, row["epoch"])


def run(
    params: TrainParams,
    data_dir: Path,
    model_dir: Path,
    params_hash: str,
    logged_params: dict[str, Any],
    tensorboard_dir: Path = Path("logs/tensorboard"),
) -> dict[str, Any]:
    """Train on data/processed and write the model artifact; track the run in MLflow.

    Args:
        params: the `train` section.
        data_dir: data/processed (train/valid parquet and preprocess.json).
        model_dir: models/.
        params_hash: hash of every params section the model depends on.
        logged_params: the params logged to MLflow (sections featurize and train).
        tensorboard_dir: where TensorBoard logs go when enabled.

    Returns:
        The model.json content.
    """
    log.info("train: %s -> %s", data_dir, model_dir)
    state_path = data_dir / "preprocess.json"
    try:
        state = json.loads(state_path.read_text())
    except (OSError, ValueError) as e:
        raise DataError(f"{state_path}: cannot read preprocessing state; run `mlops featurize` first") from e
    names = state["feature_names"]
    task = Task.from_metadata(state)
    loss = loss_name(task, params.loss)
    scale = state["label"].get("scale")  # regression: the target standardized for training
    train, valid = (load_split(data_dir / f"{s}.parquet", names, task, scale) for s in ("train", "valid"))
    ctx = distributed.init(params)
    try:
        net, history = fit(train, valid, params, ctx, task.output_dim, loss)
    finally:
        distributed.shutdown(ctx)
    if not ctx.is_main:  # rank 0 writes the model and logs the run
        return {}
    best = kept_epoch(history, params.early_stopping.min_delta)  # the epoch whose weights are saved
    meta = model_lib.save(
        model_dir,
        net,
        {
            "name": params.model_name,
            "task": task.metadata_name,
            "framework": {"torch": torch.__version__.split("+")[0]},
            "architecture": {
                "input_dim": train.x.shape[1],
                "hidden": list(params.hidden),
                "activation": params.activation,
                "dropout": params.dropout,
                **({"outputs": task.output_dim} if task.output_dim != 1 else {}),
            },
            "features": state["features"],
            "feature_names": names,
            "preprocessing": state["preprocessing"],
            "id": state["id"],
            "label": state["label"],
            **({"loss": loss} if task.kind != "binary" else {}),
            "decision_threshold": params.decision_threshold,
            "params_hash": params_hash,
            "data_md5": state["data_md5"],
            "training": {
                "epochs_run": len(history),
                "best_epoch": int(best["epoch"]),
                "best_valid_loss": best["valid_loss"],
                "train_rows": len(train.y),
                **ctx.describe(),  # world_size, backend, device
            },
        },
        exporter=params.onnx.exporter,
        opset=params.onnx.opset,
    )
    log.info(
        "train: %d epochs, best epoch %d (valid loss %.4f), weights sha256 %s",
        len(history),
        best["epoch"],
        best["valid_loss"],
        meta["weights"]["sha256"][:12],
    )
    if params.tensorboard:
        write_tensorboard(history, tensorboard_dir / meta["weights"]["sha256"][:12])
    run_id = track(params, logged_params, meta, history, model_dir)
    log.info("train: MLflow run %s", run_id)
    return meta


# ---------------------------------------------------------------- the command: `mlops train`
HELP = "train the MLP, write models/, track the run in MLflow"
"""One line for `mlops --help` (read without importing this module)."""

SECTIONS: dict[str, type[Section]] = {
    "schema": SchemaParams,
    "featurize": FeaturizeParams,
    "train": TrainParams,
}
"""The params.yaml sections this stage reads (dvc.yaml declares the same), validated alone."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Options of `mlops train`; path defaults are the paths dvc.yaml declares."""
    add_paths(p, "--data-dir", "--model-dir")


def main(args: argparse.Namespace, params: Sections) -> None:
    """Run `mlops train` with its validated sections."""
    from mlops import distributed
    from mlops.files import json_digest

    if distributed.wants_launch(params.train):  # train.distributed.nproc_per_node > 1: under torchrun
        code = distributed.launch(params.train, args.argv)
        if code:
            raise MlopsError(f"torchrun: training processes failed (exit {code}); see the rank logs above")
        return

    used = {name: params.section(name) for name in ("schema", "featurize", "train")}
    run(
        params.train,
        args.data_dir,
        args.model_dir,
        params_hash=json_digest(used),
        logged_params={k: used[k] for k in ("featurize", "train")},
    )
