"""features: the preprocessing shared by featurize, train, evaluate and the model server.

Numeric columns: nulls imputed with the train median, then standardised with the train mean and std.
Categorical columns: one-hot over the declared categories (the schema fixes order and width).
The fitted state is plain JSON (no pickle) and travels inside models/model.json, so a model file is
self-contained: raw feature values in, probabilities out. `transform` takes any mapping of column name
to a sequence of values (a DataFrame or a dict of lists), so serving needs no pandas per request.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mlops.errors import DataError


@dataclass(frozen=True)
class NumericState:
    """Fitted state of one numeric column."""

    median: float
    mean: float
    std: float


@dataclass(frozen=True)
class Preprocessor:
    """Fitted preprocessing: raw columns -> float32 feature matrix."""

    numeric: dict[str, NumericState]
    categorical: dict[str, list[str]]
    _index: dict[str, dict[str, int]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        index = {col: {cat: i for i, cat in enumerate(cats)} for col, cats in self.categorical.items()}
        object.__setattr__(self, "_index", index)

    @property
    def inputs(self) -> list[str]:
        """The raw input columns, in model order."""
        return [*self.numeric, *self.categorical]

    @property
    def feature_names(self) -> list[str]:
        """The encoded feature names (`col` for numeric, `col=category` for one-hot)."""
        return [*self.numeric, *(f"{c}={v}" for c, cats in self.categorical.items() for v in cats)]

    @property
    def width(self) -> int:
        """Number of encoded features."""
        return len(self.numeric) + sum(len(c) for c in self.categorical.values())

    @classmethod
    def fit(cls, columns: Mapping[str, Any], numeric: Sequence[str], categorical: Mapping[str, list[str]]):
        """Fit on the training rows only.

        Args:
            columns: column name -> values (e.g. the training DataFrame).
            numeric: numeric column names.
            categorical: categorical column name -> allowed categories.

        Returns:
            The fitted Preprocessor.
        """
        state = {}
        for name in numeric:
            x = np.asarray(columns[name], dtype=np.float64)
            present = x[~np.isnan(x)]
            if present.size == 0:
                raise DataError(f"column '{name}': no non-null training values to fit on")
            std = float(present.std())
            state[name] = NumericState(
                median=float(np.median(present)), mean=float(present.mean()), std=std if std > 0 else 1.0
            )
        return cls(numeric=state, categorical={k: list(v) for k, v in categorical.items()})

    def transform(self, columns: Mapping[str, Any]) -> np.ndarray:
        """Encode raw columns into the float32 feature matrix.

        Args:
            columns: column name -> sequence of raw values; extra columns are ignored.

        Returns:
            Array of shape (rows, width).

        Raises:
            DataError: naming the missing feature, the unknown category or the non-numeric value.
        """
        n = None
        for name in self.inputs:
            if name not in columns:
                raise DataError(f"missing feature '{name}'")
            size = len(columns[name])
            if n is None:
                n = size
            elif size != n:
                raise DataError(f"feature '{name}': {size} values, expected {n} like the other features")
        out = np.zeros((n or 0, self.width), dtype=np.float32)
        for j, (name, st) in enumerate(self.numeric.items()):
            try:
                x = np.asarray(columns[name], dtype=np.float64)
            except (TypeError, ValueError) as e:
                raise DataError(f"feature '{name}': expected numbers ({e})") from e
            x = np.where(np.isnan(x), st.median, x)
            out[:, j] = (x - st.mean) / st.std
        j = len(self.numeric)
        for name, cats in self.categorical.items():
            index = self._index[name]
            for row, value in enumerate(columns[name]):
                k = index.get(value, -1) if isinstance(value, str) else -1
                if k < 0:
                    raise DataError(f"feature '{name}': unknown category {value!r} (allowed: {cats})")
                out[row, j + k] = 1.0
            j += len(cats)
        return out

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready state. Lists, not mappings: the column order is the model's input order and must
        survive JSON writers that sort keys."""
        return {
            "numeric": [{"name": k, **vars(v)} for k, v in self.numeric.items()],
            "categorical": [{"name": k, "categories": v} for k, v in self.categorical.items()],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Preprocessor:
        """Rebuild from `to_dict` output."""
        return cls(
            numeric={d["name"]: NumericState(d["median"], d["mean"], d["std"]) for d in data["numeric"]},
            categorical={d["name"]: list(d["categories"]) for d in data["categorical"]},
        )
