"""features: the preprocessing shared by featurize, train, evaluate and the model server.

Numeric columns: nulls imputed with the train median, then standardised with the train mean and std.
Categorical columns: one-hot over the declared categories (the schema fixes order and width); a
nullable categorical column (`schema.categorical.<col>.nullable: true`) has one more slot, `<col>=<missing>`,
after its categories, which a null (None, NaN, pd.NA) fills. A null in a column that is not nullable is
an error naming the column.
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

MISSING = "<missing>"
"""The name of a nullable categorical column's extra one-hot slot (feature `<col>=<missing>`)."""


def is_null(value: Any) -> bool:
    """None, a float NaN, or a pandas missing-value marker (pd.NA, pd.NaT)."""
    if value is None:
        return True
    if isinstance(value, float):
        return value != value
    return type(value).__name__ in ("NAType", "NaTType")


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
    nullable: frozenset[str] = frozenset()
    """Categorical columns whose nulls fill their own `<missing>` slot (after the categories)."""
    _index: dict[str, dict[str, int]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        unknown = set(self.nullable) - set(self.categorical)
        if unknown:
            raise ValueError(f"nullable: {sorted(unknown)} are not categorical columns")
        index = {col: {cat: i for i, cat in enumerate(cats)} for col, cats in self.categorical.items()}
        object.__setattr__(self, "nullable", frozenset(self.nullable))
        object.__setattr__(self, "_index", index)

    def slots(self, column: str) -> dict[str | None, int]:
        """A categorical column's one-hot offsets within its block: category -> offset, and None -> the
        `<missing>` slot (offset `len(categories)`) when the column is nullable."""
        out: dict[str | None, int] = dict(self._index[column])
        if column in self.nullable:
            out[None] = len(self.categorical[column])
        return out

    def block_width(self, column: str) -> int:
        """One-hot columns of a categorical column: its categories, plus one if it is nullable."""
        return len(self.categorical[column]) + (column in self.nullable)

    @property
    def inputs(self) -> list[str]:
        """The raw input columns, in model order."""
        return [*self.numeric, *self.categorical]

    @property
    def feature_names(self) -> list[str]:
        """The encoded feature names (`col` for numeric, `col=category` for one-hot)."""
        return [
            *self.numeric,
            *(
                f"{c}={v}"
                for c, cats in self.categorical.items()
                for v in [*cats, *([MISSING] if c in self.nullable else [])]
            ),
        ]

    @property
    def width(self) -> int:
        """Number of encoded features."""
        return len(self.numeric) + sum(self.block_width(c) for c in self.categorical)

    @classmethod
    def fit(
        cls,
        columns: Mapping[str, Any],
        numeric: Sequence[str],
        categorical: Mapping[str, list[str]],
        nullable: Sequence[str] = (),
    ):
        """Fit on the training rows only.

        Args:
            columns: column name -> values (e.g. the training DataFrame).
            numeric: numeric column names.
            categorical: categorical column name -> allowed categories.
            nullable: the categorical columns that may hold nulls (they get a `<missing>` slot).

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
        return cls(
            numeric=state,
            categorical={k: list(v) for k, v in categorical.items()},
            nullable=frozenset(nullable),
        )

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
            missing = len(cats) if name in self.nullable else -1
            for row, value in enumerate(columns[name]):
                if isinstance(value, str):
                    k = index.get(value, -1)
                elif is_null(value):
                    if missing < 0:
                        raise DataError(f"feature '{name}': null not allowed (the column is not nullable)")
                    k = missing
                else:
                    k = -1
                if k < 0:
                    raise DataError(f"feature '{name}': unknown category {value!r} (allowed: {cats})")
                out[row, j + k] = 1.0
            j += self.block_width(name)
        return out

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready state. Lists, not mappings: the column order is the model's input order and must
        survive JSON writers that sort keys."""
        return {
            "numeric": [{"name": k, **vars(v)} for k, v in self.numeric.items()],
            "categorical": [
                {"name": k, "categories": v, "nullable": k in self.nullable}
                for k, v in self.categorical.items()
            ],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Preprocessor:
        """Rebuild from `to_dict` output."""
        return cls(
            numeric={d["name"]: NumericState(d["median"], d["mean"], d["std"]) for d in data["numeric"]},
            categorical={d["name"]: list(d["categories"]) for d in data["categorical"]},
            nullable=frozenset(d["name"] for d in data["categorical"] if d.get("nullable", False)),
        )
