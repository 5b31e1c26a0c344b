"""Test inputs generated from the project's `schema` and model.json: request rows and corruptions.

Nothing here knows the demo table: every value comes from the declared columns, ranges, categories,
nullability and the label (its classes, or a numeric target for regression), so the project tests hold
for whatever table params.yaml describes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import pandas as pd

from mlops.params.schema import SchemaParams

UNKNOWN = "__not_a_declared_value__"


@dataclass(frozen=True)
class Corruption:
    """One bad value (or table edit) and the rule that must catch it, naming `column`."""

    column: str
    rule: str  # prefix of the failed rule's name in the validation report
    what: str
    value: Any = None
    edit: str = (
        "set"  # set: put `value` in row 0; drop: remove the column; duplicate: copy row 0's id; truncate
    )

    def apply(self, frame: pd.DataFrame, min_rows: int) -> pd.DataFrame:
        """A corrupted copy of `frame`."""
        out = frame.copy()
        if self.edit == "drop":
            return out.drop(columns=[self.column])
        if self.edit == "truncate":
            return out.head(min_rows - 1)
        if self.edit == "duplicate":
            out.loc[out.index[1], self.column] = out[self.column].iloc[0]
            return out
        column = out[self.column].astype(object)
        column.iloc[0] = self.value
        out[self.column] = column.infer_objects() if not isinstance(self.value, str) else column
        return out


def _finite(x: float) -> bool:
    return not (math.isinf(x) or math.isnan(x))


def _fraction_inside(lo: float, hi: float) -> float | None:
    """A non-integer in [lo, hi], if there is one."""
    start = math.ceil(lo) if _finite(lo) else (math.floor(hi) - 1 if _finite(hi) else 0)
    for x in (start + 0.5, start - 0.5):
        if lo <= x <= hi:
            return x
    return None


def corruptions(schema: SchemaParams) -> list[Corruption]:
    """Every corruption the data contract must catch, derived per column type from the schema."""
    out: list[Corruption] = []
    for name, spec in schema.numeric.items():
        if _finite(spec.min):
            out.append(
                Corruption(name, "range", f"below min {spec.min:g}", spec.min - max(1.0, abs(spec.min)))
            )
        if _finite(spec.max):
            out.append(
                Corruption(name, "range", f"above max {spec.max:g}", spec.max + max(1.0, abs(spec.max)))
            )
        if spec.integer and (x := _fraction_inside(spec.min, spec.max)) is not None:
            out.append(Corruption(name, "integer", "a non-integer", x))
        if not spec.nullable:
            out.append(Corruption(name, "not_nullable", "a null", float("nan")))
        out.append(Corruption(name, "numeric_dtype", "text in a numeric column", UNKNOWN))
    for name, spec in schema.categorical.items():
        out.append(Corruption(name, "allowed_categories", "an unknown category", UNKNOWN))
        if not spec.nullable:
            out.append(Corruption(name, "not_nullable", "a null", None))
    out += label_corruptions(schema)
    label = schema.label.column
    out += [
        Corruption(label, "not_nullable", "a null label", None),
        Corruption(schema.id, "not_nullable", "a null id", None),
        Corruption(schema.id, "field_uniqueness", "a duplicated id", edit="duplicate"),
        *(
            Corruption(c, "column_present", "a missing column", edit="drop")
            for c in [label, *schema.features]
        ),
        Corruption("(table)", "min_rows", f"fewer than {schema.min_rows} rows", edit="truncate"),
    ]
    return out


def label_corruptions(schema: SchemaParams) -> list[Corruption]:
    """Bad label values for `schema.task`: a value outside the classes (classification); text, NaN or an
    infinite value in place of a number (regression)."""
    label = schema.label.column
    if schema.task != "regression":
        return [Corruption(label, "label_values", "a value outside the label classes", UNKNOWN)]
    return [
        Corruption(label, "numeric_dtype", "text in the numeric target", UNKNOWN),
        Corruption(label, "not_nullable", "a NaN target", float("nan")),
        Corruption(label, "finite", "an infinite target", float("inf")),
        Corruption(label, "finite", "a negative infinite target", float("-inf")),
    ]


def schema_rows(features: list[dict[str, Any]], n: int) -> dict[str, list[Any]]:
    """`n` valid rows built from model.json's feature spec alone (column name -> values).

    Numeric values spread over [min, max] (whole numbers for integer features); categorical values cycle
    through the declared categories; every nullable feature is null in the last row.
    """
    columns: dict[str, list[Any]] = {}
    for f in features:
        if f["kind"] == "categorical":
            values: list[Any] = [f["categories"][i % len(f["categories"])] for i in range(n)]
        else:
            lo, hi = float(f["min"]), float(f["max"])
            lo = lo if _finite(lo) else (hi - n - 1 if _finite(hi) else 0.0)
            hi = hi if _finite(hi) else lo + n + 1
            values = [lo + (hi - lo) * (i + 1) / (n + 1) for i in range(n)]
            if f["dtype"] == "INT64":
                values = [min(max(round(v), math.ceil(lo)), math.floor(hi)) for v in values]
        if f.get("nullable") and n > 1:
            values[-1] = None
        columns[f["name"]] = values
    return columns


def plain(value: Any, integer: bool) -> Any:
    """A JSON-ready Python value: numpy scalars unwrapped, NaN -> None, whole floats -> int if `integer`."""
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA:
        return None
    if hasattr(value, "item"):
        value = value.item()
    if isinstance(value, float) and math.isnan(value):
        return None
    if integer and isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def infer_body(features: list[dict[str, Any]], columns: dict[str, list[Any]]) -> dict[str, Any]:
    """An Open Inference Protocol request with one [n] tensor per model input."""
    inputs = []
    for f in features:
        integer = f["dtype"] == "INT64"
        data = [plain(v, integer) for v in columns[f["name"]]]
        inputs.append({"name": f["name"], "shape": [len(data)], "datatype": f["dtype"], "data": data})
    return {"inputs": inputs}


def request_corruptions(features: list[dict[str, Any]]) -> list[tuple[str, str, Any]]:
    """(input, what, bad value) the server must refuse with 400 naming the input, per feature type."""
    out: list[tuple[str, str, Any]] = []
    for f in features:
        name = f["name"]
        if f["kind"] == "categorical":
            out.append((name, "an unknown category", UNKNOWN))
        else:
            lo, hi = float(f["min"]), float(f["max"])
            if _finite(lo):
                out.append((name, "below min", lo - max(1.0, abs(lo))))
            if _finite(hi):
                out.append((name, "above max", hi + max(1.0, abs(hi))))
            if f["dtype"] == "INT64" and (x := _fraction_inside(lo, hi)) is not None:
                out.append((name, "a non-integer", x))
        if not f.get("nullable"):
            out.append((name, "a null", None))
    return out
