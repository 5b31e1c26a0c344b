"""params.evaluate: `evaluate`, calibration bins and the slices metrics are reported on."""

from __future__ import annotations

from mlops.params.base import PositiveInt, Section


class Slice(Section):
    """A business slice: a categorical column, or a numeric column cut into bands at `bins` edges."""

    column: str
    bins: list[float] | None = None


class EvaluateParams(Section):
    """`evaluate`: calibration bins and business slices (the decision threshold travels in model.json)."""

    calibration_bins: PositiveInt
    top_k: PositiveInt  # multiclass top_k_accuracy: right when the class is among the k most probable
    slices: list[Slice]
    min_slice_rows: PositiveInt
