"""params.expectations: `expectations`, behavioural checks of the trained model (tests/project).

What an expectation watches follows `schema.task` (mlops.task): the positive-class probability (binary),
the probability of a named `target_class` (multiclass), or the predicted value (regression). Checks that
need the schema (columns, categories, classes, the task) run in `check_expectations`, when the whole
params.yaml is loaded (mlops.config).
"""

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
    """The model's output moves `direction` on at least `min_share` of the changed rows: the positive-class
    probability (binary), the probability of `target_class` (multiclass: required there, refused by the
    other tasks) or the predicted value (regression)."""

    direction: Literal["up", "down"]
    min_share: Annotated[float, Field(gt=0.0, le=1.0)]
    target_class: str | None = None


class Invariance(Change):
    """The model's outputs move by at most `max_delta` on every changed row: the positive-class
    probability (binary), every class probability (multiclass), the predicted value in the target's units
    (regression)."""

    max_delta: Annotated[float, Field(ge=0.0)]


class Band(Section):
    """A numeric condition: min <= value <= max."""

    min: float
    max: float


class Minimum(Section):
    """Minimum functionality: of the real rows matching every `where` condition (a list of categories
    or a numeric band), at least `min_share` are predicted `expect`: a label class (classification) or a
    band `{min, max}` the predicted value falls in (regression)."""

    where: Annotated[dict[str, list[str] | Band], Field(min_length=1)]
    expect: str | Band
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


def _check_band(where: str, band: Band) -> None:
    if band.min > band.max:
        raise ValueError(f"{where}: min {band.min:g} is above max {band.max:g}")


def _check_target_class(schema: SchemaParams, where: str, d: Directional) -> None:
    task, classes = schema.task, schema.label.classes
    if task == "multiclass":
        if d.target_class is None:
            raise ValueError(
                f"{where}.target_class: missing required key (schema.task: multiclass names the class "
                f"whose probability moves, one of {classes})"
            )
        if d.target_class not in (classes or ()):
            raise ValueError(f"{where}.target_class: {d.target_class!r} is not a label class ({classes})")
    elif d.target_class is not None:
        watched = (
            f"the probability of the positive class '{schema.label.positive}'"
            if task == "binary"
            else "the predicted value"
        )
        raise ValueError(
            f"{where}.target_class: only a multiclass task names a target class (schema.task: {task} "
            f"moves {watched}); remove the key"
        )


def _check_expect(schema: SchemaParams, where: str, m: Minimum) -> None:
    task, classes = schema.task, schema.label.classes
    if task == "regression":
        if not isinstance(m.expect, Band):
            raise ValueError(
                f"{where}.expect: schema.task: regression expects a band {{min, max}} of predicted values, "
                f"got {m.expect!r}"
            )
        _check_band(f"{where}.expect", m.expect)
    elif isinstance(m.expect, Band):
        raise ValueError(
            f"{where}.expect: schema.task: {task} expects a label class (one of {classes}), "
            "not a {min, max} band"
        )
    elif m.expect not in (classes or ()):
        raise ValueError(f"{where}.expect: {m.expect!r} is not a label class ({classes})")


def check_expectations(schema: SchemaParams, expectations: ExpectationsParams) -> None:
    """Every column, value and class an expectation names exists in the schema, and each expectation fits
    `schema.task` (`target_class` only and always for multiclass; `expect` a class, or a band for
    regression).

    Raises:
        ValueError: naming the key path (e.g. `expectations.directional.0.target_class`) and what was
            expected (mlops.config turns it into a ConfigError, exit 2).
    """
    features = set(schema.features)
    for i, d in enumerate(expectations.directional):
        _check_change(schema, f"expectations.directional.{i}", d, features)
        _check_target_class(schema, f"expectations.directional.{i}", d)
    for i, v in enumerate(expectations.invariance):
        _check_change(schema, f"expectations.invariance.{i}", v, features | {schema.id})
    for i, m in enumerate(expectations.minimum):
        where = f"expectations.minimum.{i}"
        _check_expect(schema, where, m)
        for column, cond in m.where.items():
            if isinstance(cond, Band):
                if column not in schema.numeric:
                    raise ValueError(
                        f"{where}.where.{column}: a {{min, max}} band needs a numeric schema column"
                    )
                _check_band(f"{where}.where.{column}", cond)
            if isinstance(cond, list):
                if column not in schema.categorical:
                    raise ValueError(f"{where}.where.{column}: categories need a categorical column")
                unknown = set(cond) - set(schema.categorical[column].categories)
                if unknown:
                    raise ValueError(f"{where}.where.{column}: unknown categories {sorted(unknown)}")
