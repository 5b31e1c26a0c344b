"""params.train: `train`, the network, the optimiser, early stopping, devices and the ONNX export."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from mlops.params.base import Fraction, PositiveInt, Section


class EarlyStopping(Section):
    """Stop when the validation loss has not improved by `min_delta` for `patience` epochs."""

    patience: PositiveInt
    min_delta: Annotated[float, Field(ge=0.0)]


class DistributedParams(Section):
    """`train.distributed`: data-parallel training under torchrun (mlops.distributed)."""

    nproc_per_node: PositiveInt  # > 1: `mlops train` starts itself under torchrun with N processes
    backend: Literal["auto", "gloo", "nccl"]  # auto: gloo on CPU, NCCL on CUDA


class OnnxExportParams(Section):
    """`train.onnx`: the ONNX export (models/model.onnx) that `serve.backend: onnx` serves without torch."""

    exporter: Literal["torchscript", "dynamo", "none"]  # none: no export (serve with backend torch)
    opset: Annotated[int, Field(ge=13)]  # the ai.onnx opset of the exported graph


class TrainParams(Section):
    """`train`: the MLP and its optimisation."""

    model_name: str
    loss: Literal[
        "auto", "bce", "cross_entropy", "mse", "huber"
    ]  # auto: bce | cross_entropy | mse by schema.task
    decision_threshold: Fraction
    seed: int
    hidden: Annotated[list[PositiveInt], Field(min_length=1)]
    activation: Literal["relu", "gelu", "tanh"]
    dropout: Annotated[float, Field(ge=0.0, lt=1.0)]
    lr: Annotated[float, Field(gt=0.0)]
    weight_decay: Annotated[float, Field(ge=0.0)]
    batch_size: PositiveInt
    epochs: PositiveInt
    early_stopping: EarlyStopping
    threads: PositiveInt
    device: Literal["cpu", "cuda", "auto"]
    distributed: DistributedParams
    experiment: str
    tensorboard: bool
    onnx: OnnxExportParams
