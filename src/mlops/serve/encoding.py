"""encoding: one validated pass from a decoded OIP request to the model's float32 feature matrix.

The same arithmetic as `mlops.features.Preprocessor.transform` (numeric: median imputation, then
standardisation; categorical: one-hot over the declared categories), built from the same fitted state,
but vectorised across features and fused with validation: one numpy array for all numeric inputs,
one fancy assignment for all one-hot columns. For a 64-row request this is several times faster than
the column-by-column `transform`; tests check that both produce the same matrix.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from mlops.errors import DataError
from mlops.features import Preprocessor
from mlops.serve.protocol import OUTPUTS, FeatureSpec, InferenceRequest

FLOAT32_MAX = float(np.finfo(np.float32).max)


class Encoder:
    """Validates a request against the model's feature spec and encodes it."""

    def __init__(
        self, features: list[dict[str, Any]], preprocessor: Preprocessor, outputs: Sequence[str] = OUTPUTS
    ):
        """Args:
        features: model.json `features`.
        preprocessor: the fitted preprocessing state.
        outputs: the names a request may ask for (the task's, `Task.output_names`; binary's by default).
        """
        self.outputs = tuple(outputs)
        self.specs = {f["name"]: FeatureSpec(f) for f in features}
        if set(self.specs) != set(preprocessor.inputs):
            raise ValueError("model.json features and preprocessing state name different inputs")
        self.numeric = list(preprocessor.numeric)
        state = [preprocessor.numeric[n] for n in self.numeric]
        self.mean = np.array([s.mean for s in state], dtype=np.float64)[:, None]
        self.std = np.array([s.std for s in state], dtype=np.float64)[:, None]
        self.median = np.array([s.median for s in state], dtype=np.float64)[:, None]
        self.lo = np.array([self.specs[n].lo for n in self.numeric], dtype=np.float64)[:, None]
        self.hi = np.array([self.specs[n].hi for n in self.numeric], dtype=np.float64)[:, None]
        # category -> one-hot column; a nullable column's null (None) has its own `<missing>` slot
        self.categorical: list[tuple[str, dict[str | None, int]]] = []
        column = len(self.numeric)
        for name in preprocessor.categorical:
            slots = preprocessor.slots(name)
            self.categorical.append((name, {c: column + i for c, i in slots.items()}))
            column += preprocessor.block_width(name)
        self.width = preprocessor.width

    def columns(self, request: InferenceRequest) -> tuple[dict[str, list[Any]], int]:
        """Check every input's name, datatype, shape and value types, and the requested outputs' names;
        return (raw columns, rows)."""
        columns: dict[str, list[Any]] = {}
        specs = self.specs
        rows = -1
        for tensor in request.inputs:
            spec = specs.get(tensor.name)
            if spec is None:
                raise DataError(f"input '{tensor.name}': unknown input (expected: {', '.join(specs)})")
            if tensor.name in columns:
                raise DataError(f"input '{tensor.name}': given twice")
            values = spec.check(tensor)
            if rows < 0:
                rows = len(values)
            elif len(values) != rows:
                raise DataError(f"input '{tensor.name}': {len(values)} rows, other inputs have {rows}")
            columns[tensor.name] = values
        if len(columns) != len(specs):
            missing = [n for n in specs if n not in columns]
            raise DataError(f"input '{missing[0]}': missing (required inputs: {', '.join(missing)})")
        for out in request.outputs or ():
            if out.name not in self.outputs:
                raise DataError(f"output '{out.name}': unknown output (available: {', '.join(self.outputs)})")
        return columns, rows

    def encode(self, request: InferenceRequest) -> tuple[dict[str, list[Any]], np.ndarray]:
        """Validate and encode; return (raw columns for the prediction log, float32 matrix rows x width).

        Raises:
            DataError: naming the input at fault (unknown category, value out of range, wrong type...).
        """
        columns, n = self.columns(request)
        x = np.zeros((n, self.width), dtype=np.float32)
        if self.numeric:
            try:
                num = np.array([columns[c] for c in self.numeric], dtype=np.float64)  # None -> nan
            except OverflowError as e:
                raise DataError(f"input: a number too large for FP64 ({e})") from e
            with np.errstate(invalid="ignore"):
                bad = (num < self.lo) | (num > self.hi)
            if bad.any():
                j, i = np.argwhere(bad)[0]
                spec = self.specs[self.numeric[j]]
                raise DataError(
                    f"input '{spec.name}': value {columns[spec.name][i]!r} outside [{spec.lo:g}, {spec.hi:g}]"
                )
            missing = np.isnan(num)
            if missing.any():
                num = np.where(missing, self.median, num)
            z = (num - self.mean) / self.std
            if not (np.abs(z) <= FLOAT32_MAX).all():  # a finite FP64 value beyond the model's float32
                j, i = np.argwhere(~(np.abs(z) <= FLOAT32_MAX))[0]
                name = self.numeric[j]
                raise DataError(
                    f"input '{name}': value {columns[name][i]!r} too large for the model (float32)"
                )
            x[:, : len(self.numeric)] = z.T
        if self.categorical:
            codes = []
            for name, index in self.categorical:
                try:
                    codes.append([index[v] for v in columns[name]])
                except (KeyError, TypeError):
                    bad = next(v for v in columns[name] if not ((v is None or type(v) is str) and v in index))
                    if bad is None:
                        raise DataError(
                            f"input '{name}': null not allowed (feature is not nullable)"
                        ) from None
                    raise DataError(
                        f"input '{name}': unknown category {bad!r} (allowed: {self.specs[name].categories})"
                    ) from None
            x[np.broadcast_to(np.arange(n), (len(codes), n)), np.array(codes)] = 1.0
        return columns, x
