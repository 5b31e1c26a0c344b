"""params.gate: `gate`, the absolute rules a candidate must pass (bounds, slices, latency, ONNX parity, size)."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, model_validator

from mlops.metrics import ALL_METRICS, PER_CLASS
from mlops.params.base import PositiveInt, Section


def _known_metrics(where: str, names: dict[str, float]) -> None:
    for name in names:
        if name not in ALL_METRICS:
            raise ValueError(f"{where}.{name}: unknown metric (expected one of {', '.join(ALL_METRICS)})")


class MetricBounds(Section):
    """Absolute bounds on the test metrics: metric -> minimum, metric -> maximum (either may be empty)."""

    min: dict[str, float]
    max: dict[str, float]


class SliceBounds(Section):
    """Minimums every business slice evaluated with metrics must reach: metric -> minimum."""

    min: dict[str, float]


class ClassBounds(Section):
    """Multiclass: minimums every class must reach: `precision`, `recall` or `f1` -> minimum."""

    min: dict[str, float]


class LatencyParams(Section):
    """CPU inference latency budgets (p95 over `repeats` timed calls after `warmup` untimed ones)."""

    p95_ms_single: Annotated[float, Field(gt=0.0)]
    p95_ms_batch: Annotated[float, Field(gt=0.0)]
    batch_rows: PositiveInt
    repeats: PositiveInt
    warmup: Annotated[int, Field(ge=0)]
    threads: PositiveInt


class OnnxParityParams(Section):
    """`gate.onnx_parity`: the ONNX export must score the test split as the torch network does."""

    max_abs_diff: Annotated[float, Field(gt=0.0)]  # max |p_onnx - p_torch| over the test rows


class GateParams(Section):
    """`gate`: the rules a candidate model must pass before it may be registered and promoted."""

    metrics: MetricBounds
    slices: SliceBounds
    classes: ClassBounds
    latency: LatencyParams
    onnx_parity: OnnxParityParams
    max_model_bytes: PositiveInt

    @model_validator(mode="after")
    def _metric_names(self) -> GateParams:
        _known_metrics("gate.metrics.min", self.metrics.min)
        _known_metrics("gate.metrics.max", self.metrics.max)
        _known_metrics("gate.slices.min", self.slices.min)
        for name in self.classes.min:
            if name not in PER_CLASS:
                raise ValueError(
                    f"gate.classes.min.{name}: unknown per-class metric (expected one of {', '.join(PER_CLASS)})"
                )
        return self

    def check_task(self, task: str) -> None:
        """Every bound names a metric of `task` (binary | multiclass | regression).

        Raises:
            ConfigError: the first key that does not fit (exit 2), e.g. `gate.metrics.min.roc_auc` on a
                regression model.
        """
        from mlops.errors import ConfigError
        from mlops.metrics import TASK_METRICS

        known = TASK_METRICS[task]
        for where, names in (
            ("gate.metrics.min", self.metrics.min),
            ("gate.metrics.max", self.metrics.max),
            ("gate.slices.min", self.slices.min),
        ):
            for name in names:
                if name not in known:
                    raise ConfigError(
                        f"params.yaml: {where}.{name}: not a {task} metric (schema.task: {task} has "
                        f"{', '.join(known)})"
                    )
        if self.classes.min and task != "multiclass":
            first = next(iter(self.classes.min))
            raise ConfigError(
                f"params.yaml: gate.classes.min.{first}: per-class floors apply to schema.task: multiclass only "
                f"(this model is {task}); set gate.classes.min: {{}}"
            )
