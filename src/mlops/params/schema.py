"""params.schema: `schema`, the data contract of the raw table (validate checks it; featurize and the model use it)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field, field_validator, model_validator

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
    """The label column; for classification its classes (in the model's output order) and, for a binary
    task, the `positive` class whose probability the model gives. A regression label has neither."""

    column: str
    classes: Annotated[list[str], Field(min_length=2)] | None = None
    positive: str | None = None

    @field_validator("classes", "positive", mode="before")
    @classmethod
    def _integer_classes_are_names(cls, v: object) -> object:
        """A label coded as integers lists its classes as integers (`classes: [1, 2, 3]`): they are the
        class names "1", "2", "3" (mlops.task.class_names reads the column the same way)."""

        def name(x: object) -> object:
            return str(x) if isinstance(x, int) and not isinstance(x, bool) else x

        return [name(x) for x in v] if isinstance(v, list) else name(v)


TASKS = ("binary", "multiclass", "regression")
"""`schema.task`: what the label is (mlops.task)."""


class SchemaParams(Section):
    """`schema`: the data contract of the raw table (validate checks it; featurize and the model use it)."""

    id: str
    task: Literal["binary", "multiclass", "regression"]
    label: LabelSpec
    numeric: dict[str, NumericColumn]
    categorical: dict[str, CategoricalColumn]
    min_rows: PositiveInt

    @model_validator(mode="after")
    def _label_fits_the_task(self) -> SchemaParams:
        label, task = self.label, self.task
        if task == "regression":
            for key in ("classes", "positive"):
                if getattr(label, key) is not None:
                    raise ValueError(
                        f"schema.label.{key}: a regression label has no {key} (schema.task: regression)"
                    )
            return self
        if label.classes is None:
            raise ValueError(
                f"schema.label.classes: missing required key (schema.task: {task} lists every class)"
            )
        if len(set(label.classes)) != len(label.classes):
            raise ValueError(f"schema.label.classes: duplicated classes in {label.classes}")
        if task == "binary":
            if len(label.classes) != 2:
                raise ValueError(
                    f"schema.label.classes: schema.task: binary needs exactly two classes, got {label.classes} "
                    "(more classes: schema.task: multiclass)"
                )
            if label.positive is None:
                raise ValueError(
                    "schema.label.positive: missing required key (schema.task: binary names the class it scores)"
                )
            if label.positive not in label.classes:
                raise ValueError(f"schema.label.positive: '{label.positive}' is not one of {label.classes}")
        elif label.positive is not None:
            raise ValueError(
                "schema.label.positive: only a binary task has a positive class (schema.task: multiclass)"
            )
        return self

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
