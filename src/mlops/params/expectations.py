"""params.expectations: `expectations`, behavioural checks of the trained model (tests/project)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, model_validator

from mlops.params.base import Section
from mlops.params.schema import SchemaParams


class Change(Section):
    """How an expectation perturbs one column of real rows: add `change` (numeric) or `set` a value.

    Rows the perturbation cannot apply to are left out: a null value, a result outside the column's
    [min, max], or a row that already holds the `set` value.
    """

    feature: str
    change: float | None = None
    set: str | float | None = None

    @model_validator(mode="after")
    def _one_perturbation(self) -> Change:
        if (self.change is None) == (self.set is None):
            raise ValueError(f"expectations: '{self.feature}': give exactly one of `change` or `set`")
        return self


class Directional(Change):
    """The positive-class probability moves `direction` on at least `min_share` of the changed rows."""

    direction: Literal["up", "down"]
    min_share: Annotated[float, Field(gt=0.0, le=1.0)]


class Invariance(Change):
    """The positive-class probability moves by at most `max_delta` on every changed row."""

    max_delta: Annotated[float, Field(ge=0.0)]


class Band(Section):
    """A numeric condition: min <= value <= max."""

    min: float
    max: float


class Minimum(Section):
    """Minimum functionality: of the real rows matching every `where` condition (a list of categories
    or a numeric band), at least `min_share` are predicted `expect`."""

    where: Annotated[dict[str, list[str] | Band], Field(min_length=1)]
    expect: str
    min_share: Annotated[float, Field(gt=0.0, le=1.0)]


class ExpectationsParams(Section):
    """`expectations`: behavioural checks of the trained model on real test rows (tests/project)."""

    directional: list[Directional]
    invariance: list[Invariance]
    minimum: list[Minimum]


def _check_change(schema: SchemaParams, where: str, c: Change, allowed: set[str]) -> None:
    if c.feature not in allowed:
        raise ValueError(f"{where}.feature: '{c.feature}' is not a schema column")
    if c.feature in schema.categorical:
        cats = schema.categorical[c.feature].categories
        if c.change is not None:
            raise ValueError(f"{where}.change: '{c.feature}' is categorical; use `set` to one of {cats}")
        if c.set not in cats:
            raise ValueError(f"{where}.set: {c.set!r} is not a category of '{c.feature}' ({cats})")
    elif c.feature in schema.numeric and c.set is not None:
        spec = schema.numeric[c.feature]
        if isinstance(c.set, str) or not spec.min <= c.set <= spec.max:
            raise ValueError(f"{where}.set: {c.set!r} is not a number in [{spec.min}, {spec.max}]")


def check_expectations(schema: SchemaParams, expectations: ExpectationsParams) -> None:
    """Every column, value and class an expectation names exists in the schema."""
    features = set(schema.features)
    for i, d in enumerate(expectations.directional):
        _check_change(schema, f"expectations.directional.{i}", d, features)
    for i, v in enumerate(expectations.invariance):
        _check_change(schema, f"expectations.invariance.{i}", v, features | {schema.id})
    for i, m in enumerate(expectations.minimum):
        where = f"expectations.minimum.{i}"
        if m.expect not in schema.label.classes:
            raise ValueError(f"{where}.expect: {m.expect!r} is not a label class ({schema.label.classes})")
        for column, cond in m.where.items():
            if isinstance(cond, Band) and column not in schema.numeric:
                raise ValueError(f"{where}.where.{column}: a {{min, max}} band needs a numeric schema column")
            if isinstance(cond, list):
                if column not in schema.categorical:
                    raise ValueError(f"{where}.where.{column}: categories need a categorical column")
                unknown = set(cond) - set(schema.categorical[column].categories)
                if unknown:
                    raise ValueError(f"{where}.where.{column}: unknown categories {sorted(unknown)}")
