"""params.schema: `schema`, the data contract of the raw table (validate checks it; featurize and the model use it)."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, model_validator

from mlops.params.base import PositiveInt, Section


class NumericColumn(Section):
    """A numeric column: range, nullability, integrality."""

    min: float
    max: float
    nullable: bool
    integer: bool


class CategoricalColumn(Section):
    """A categorical column: its allowed values (the order fixes the one-hot layout). A nullable one gets
    one more one-hot slot, `<missing>`, which nulls fill (mlops.features)."""

    categories: Annotated[list[str], Field(min_length=1)]
    nullable: bool


class LabelSpec(Section):
    """The label column and its classes; `positive` is the class the model scores."""

    column: str
    classes: Annotated[list[str], Field(min_length=2, max_length=2)]
    positive: str

    @model_validator(mode="after")
    def _positive_is_a_class(self) -> LabelSpec:
        if self.positive not in self.classes:
            raise ValueError(f"schema.label.positive: '{self.positive}' is not one of {self.classes}")
        return self


class SchemaParams(Section):
    """`schema`: the data contract of the raw table (validate checks it; featurize and the model use it)."""

    id: str
    label: LabelSpec
    numeric: dict[str, NumericColumn]
    categorical: dict[str, CategoricalColumn]
    min_rows: PositiveInt

    @model_validator(mode="after")
    def _categories(self) -> SchemaParams:
        for name, col in self.categorical.items():
            where = f"schema.categorical.{name}.categories"
            if len(set(col.categories)) != len(col.categories):
                raise ValueError(f"{where}: duplicated values in {col.categories}")
            if col.nullable and "<missing>" in col.categories:
                raise ValueError(f"{where}: '<missing>' names the null slot of a nullable column; rename it")
        return self

    @property
    def features(self) -> list[str]:
        """Feature columns in model order: numeric first, then categorical, each in declaration order."""
        return [*self.numeric, *self.categorical]
