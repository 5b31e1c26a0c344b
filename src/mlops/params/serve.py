"""params.serve: the `serve` section of params.yaml, typed with msgspec (the serving stack's one library).

The model server reads nothing else from params.yaml, so `mlops serve` validates this section alone,
without pydantic: importing pydantic and building the pipeline's params classes cost ~100 ms of CPU,
a fifth of a container's start to ready (benchmarks/serving/startup.md). `mlops.config.Params` embeds
the same classes, so the pipeline's full check of params.yaml applies the same rules, with the same
messages: unknown, missing or mistyped keys are errors that name `serve.<key path>`, no silent default.
"""

from __future__ import annotations

import os
from typing import Annotated, Any

import msgspec

from mlops.errors import ConfigError
from mlops.params import structs
from mlops.params.backend import Backend

PositiveInt = Annotated[int, msgspec.Meta(gt=0)]


class PredictionLogParams(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """`serve.prediction_log`: sampled, non-blocking log of inputs and outputs for drift monitoring."""

    rate: Annotated[float, msgspec.Meta(ge=0.0, le=1.0)]
    dir: str
    max_file_bytes: PositiveInt
    flush_interval_s: Annotated[float, msgspec.Meta(gt=0.0)]
    queue_size: PositiveInt


class ServeParams(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """`serve`: the Open Inference Protocol model server (throughput, limits, shutdown, prediction log)."""

    workers: PositiveInt
    backend: Backend  # onnx: models/model.onnx on ONNX Runtime (no torch import)
    threads: PositiveInt  # intra-op threads per worker (ONNX Runtime or torch)
    max_batch_size: PositiveInt
    max_wait_ms: Annotated[float, msgspec.Meta(ge=0.0)]
    queue_size: PositiveInt
    max_body_bytes: PositiveInt
    grace_period_s: Annotated[float, msgspec.Meta(gt=0.0)]
    keep_alive_s: PositiveInt
    prediction_log: PredictionLogParams


def describe(error: msgspec.ValidationError, data: Any, where: str) -> str:
    """msgspec's message in the form `mlops.config` gives every key: `serve.workers: expected ...`."""
    return structs.describe(error, data, where, ServeParams)


def convert(data: Any, where: str = "serve") -> ServeParams:
    """Validate the `serve` section (plain data, as parsed from YAML).

    Raises:
        ValueError: the first offending key, named `where.<key path>`.
    """
    return structs.convert(data, ServeParams, where)


def to_builtins(params: ServeParams | PredictionLogParams) -> dict[str, Any]:
    """Plain data (for MLflow params, params hashes and the workers' settings)."""
    return msgspec.to_builtins(params)


def replace(params: ServeParams, **changes: Any) -> ServeParams:
    """A copy with `changes` (keys of `serve`, `prediction_log` a partial mapping), validated again."""
    data = to_builtins(params)
    log = {**data["prediction_log"], **changes.pop("prediction_log", {})}
    return convert({**data, **changes, "prediction_log": log})


def load(path: str | os.PathLike[str] = "params.yaml") -> ServeParams:
    """Read params.yaml (YAML 1.2, as DVC reads it) and validate its `serve` section only.

    Raises:
        ConfigError: the file is missing or not YAML, has no `serve` mapping, or a `serve` key is
            unknown, missing or mistyped (names the file and the key path).
    """
    from mlops.params_io import read_yaml, sections

    data = sections(read_yaml(path), str(path))
    if "serve" not in data:
        raise ConfigError(f"{path}: serve: missing required key")
    try:
        return convert(data["serve"])
    except ValueError as e:
        raise ConfigError(f"{path}: {e}") from None
