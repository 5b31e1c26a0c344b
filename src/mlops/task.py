"""task: what the model predicts (params.yaml `schema.task`), defined once for every stage and the server.

- `binary`: two classes; the model gives the `positive` class's probability (float64 [rows]); the label is
  the positive class where that probability reaches the decision threshold (model.json).
- `multiclass`: N classes; the model gives one probability per class, in `schema.label.classes` order
  (float64 [rows, N], rows sum to 1); the label is the most probable class.
- `regression`: a numeric target; the model gives the predicted value in the target's own units
  (float64 [rows]). Training standardizes the target (mean and std of the training rows); the network's
  exported head undoes it, so nothing outside training ever sees scaled values.

Featurize encodes the label column through `Task.encode` (binary: 0/1 int8, multiclass: the class index,
int16; regression: float64) and refuses what does not fit (DataError, exit 3, naming the column, the values
and the rule). Evaluate, the gate, the champion comparison, the server, the pyfunc and drift all read
the task from model.json (`Task.from_metadata`), so they cannot disagree about what an output means.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from mlops.errors import DataError

BINARY, MULTICLASS, REGRESSION = "binary", "multiclass", "regression"
KINDS = (BINARY, MULTICLASS, REGRESSION)

METADATA_TASK = {
    BINARY: "binary-classification",
    MULTICLASS: "multiclass-classification",
    REGRESSION: "regression",
}
"""model.json `task` for each `schema.task` (the binary name predates the others)."""

OUTPUT = {BINARY: "probability", MULTICLASS: "probabilities", REGRESSION: "prediction"}
"""The model's numeric output: the ONNX graph's output name and the served tensor of the same name."""

LABEL_OUTPUT = "label"
"""The served predicted class (classification only)."""

LOSSES = {BINARY: ("bce",), MULTICLASS: ("cross_entropy",), REGRESSION: ("mse", "huber")}
"""`train.loss` values each task accepts (`auto` picks the first)."""


def class_names(values: Any) -> Any:
    """Raw label values as class names (a pandas Series of str, nulls kept): a label stored as integers
    (a grade 1-5, a code) names its classes "1".."5", as `schema.label.classes` lists them; an
    integral float (a column with nulls read as float) counts as that integer."""
    import pandas as pd

    def name(v: Any) -> Any:
        if v is None or isinstance(v, str):
            return v
        if isinstance(v, float):
            return None if v != v else (str(int(v)) if v.is_integer() else str(v))
        return str(v.item() if hasattr(v, "item") else v)

    s = pd.Series(values)
    if s.dtype == object and all(isinstance(v, str) for v in s.head(1000)):
        return s
    return s.astype(object).map(name)


@dataclass(frozen=True)
class Task:
    """The task of one model: its kind, label column, classes and (binary) positive class and threshold."""

    kind: str
    column: str
    classes: tuple[str, ...] = ()
    positive: str | None = None
    threshold: float = 0.5

    # ------------------------------------------------------------ construction
    @classmethod
    def from_schema(cls, schema: Any, threshold: float = 0.5) -> Task:
        """From the `schema` params section (and `train.decision_threshold` for binary)."""
        label = schema.label
        return cls(schema.task, label.column, tuple(label.classes or ()), label.positive, threshold)

    @classmethod
    def from_metadata(cls, meta: dict[str, Any]) -> Task:
        """From model.json (or preprocess.json's `label` section with its `task`)."""
        kind = {v: k for k, v in METADATA_TASK.items()}.get(meta.get("task", "binary-classification"))
        if kind is None:
            kind = meta["task"] if meta["task"] in KINDS else BINARY
        label = meta.get("label") or {}
        return cls(
            kind,
            label.get("column", ""),
            tuple(label.get("classes") or ()),
            label.get("positive"),
            float(meta.get("decision_threshold", 0.5)),
        )

    # ------------------------------------------------------------ shape of the model's output
    @property
    def is_classification(self) -> bool:
        return self.kind != REGRESSION

    @property
    def output_dim(self) -> int:
        """Width of the network's last layer: N for multiclass, else 1."""
        return len(self.classes) if self.kind == MULTICLASS else 1

    @property
    def output_name(self) -> str:
        return OUTPUT[self.kind]

    @property
    def metadata_name(self) -> str:
        return METADATA_TASK[self.kind]

    def label_section(self) -> dict[str, Any]:
        """model.json / preprocess.json `label`: column, and classes (+ positive) for classification."""
        out: dict[str, Any] = {"column": self.column}
        if self.is_classification:
            out["classes"] = list(self.classes)
        if self.kind == BINARY:
            out["positive"] = self.positive
        return out

    @property
    def negative(self) -> str:
        """Binary: the class that maps to 0."""
        return next(c for c in self.classes if c != self.positive)

    # ------------------------------------------------------------ the target
    def encode(self, values: Any, where: str) -> np.ndarray:
        """The training target for raw label values.

        Binary: 1 for the positive class, else 0 (int8). Multiclass: the index of the value in `classes`
        (int16). Regression: float64.

        Args:
            values: the raw label column (a pandas Series or array).
            where: what the values are, for the error (e.g. `data/interim/clean.parquet: churn`).

        Raises:
            DataError: a class outside `classes`; a regression target that is not numeric or not finite.
        """
        import pandas as pd

        s = pd.Series(values)
        if self.kind == REGRESSION:
            if not pd.api.types.is_numeric_dtype(s) or pd.api.types.is_bool_dtype(s):
                odd = s[pd.to_numeric(s, errors="coerce").isna()].astype(str).unique()[:5].tolist()
                raise DataError(
                    f"{where}: a regression target must be numeric (schema.task: regression); "
                    f"non-numeric values {odd}"
                )
            y = s.to_numpy(dtype=np.float64)
            bad = ~np.isfinite(y)
            if bad.any():
                shown = sorted({str(v) for v in y[bad]})
                raise DataError(
                    f"{where}: a regression target must be finite; {int(bad.sum())} rows hold {shown}"
                )
            return y
        as_text = class_names(s)
        unknown = sorted({str(v) for v in as_text[~as_text.isin(self.classes)]})
        if unknown:
            raise DataError(
                f"{where}: label values {unknown[:5]} are not in schema.label.classes {list(self.classes)}"
            )
        if self.kind == BINARY:
            return (as_text == self.positive).to_numpy().astype(np.int8)
        index = {c: i for i, c in enumerate(self.classes)}
        return as_text.map(index).to_numpy().astype(np.int16)

    def require_classes(self, y: np.ndarray, where: str) -> None:
        """Every class has rows in `y` (an encoded split). Raises DataError naming the missing classes."""
        if not self.is_classification:
            return
        codes = (0, 1) if self.kind == BINARY else range(len(self.classes))
        present = set(np.unique(np.asarray(y)).tolist())
        missing = [self.decode_code(c) for c in codes if c not in present]
        if missing:
            raise DataError(
                f"{where}: no rows of class {missing} of label '{self.column}' (every class needs rows in "
                "every split: more rows, or fewer classes in schema.label.classes)"
            )

    def decode_code(self, code: int) -> str:
        """The class name of one encoded target value."""
        if self.kind == BINARY:
            return self.positive if code else self.negative  # type: ignore[return-value]
        return self.classes[int(code)]

    def decode(self, y: Sequence[Any] | np.ndarray) -> list[Any]:
        """Raw label values for encoded targets (class names; regression values unchanged)."""
        if not self.is_classification:
            return [float(v) for v in y]
        return [self.decode_code(int(v)) for v in y]

    def target_summary(self, y: np.ndarray) -> dict[str, Any]:
        """What a split's target looks like: rows and positive rate (binary), class shares (multiclass),
        mean and std (regression)."""
        y = np.asarray(y)
        out: dict[str, Any] = {"rows": int(len(y))}
        if self.kind == BINARY:
            out["positive_rate"] = float(y.mean()) if len(y) else None
        elif self.kind == MULTICLASS:
            counts = np.bincount(y.astype(np.int64), minlength=len(self.classes)) if len(y) else np.zeros(0)
            out["class_rates"] = (
                {c: float(counts[i] / len(y)) for i, c in enumerate(self.classes)} if len(y) else {}
            )
        else:
            out["mean"] = float(y.mean()) if len(y) else None
            out["std"] = float(y.std()) if len(y) else None
        return out

    # ------------------------------------------------------------ the model's outputs
    def labels(self, out: np.ndarray) -> list[str] | None:
        """Predicted classes for model outputs (None for regression)."""
        if self.kind == BINARY:
            pos, neg, t = self.positive, self.negative, self.threshold
            return [pos if p >= t else neg for p in np.asarray(out).tolist()]
        if self.kind == MULTICLASS:
            classes = self.classes
            return [classes[i] for i in np.argmax(np.asarray(out), axis=1).tolist()]
        return None

    def outputs(self, out: np.ndarray) -> dict[str, list[Any]]:
        """The served outputs of a batch: name -> one value per row (multiclass probabilities: one list of
        N per row)."""
        values = np.asarray(out).tolist()
        named: dict[str, list[Any]] = {self.output_name: values}
        predicted = self.labels(out)
        if predicted is not None:
            named[LABEL_OUTPUT] = predicted
        return named

    def output_spec(self) -> list[dict[str, Any]]:
        """OIP metadata `outputs`: name, datatype and shape of each served tensor (-1: rows)."""
        spec = [
            {
                "name": self.output_name,
                "datatype": "FP64",
                "shape": [-1, len(self.classes)] if self.kind == MULTICLASS else [-1],
            }
        ]
        if self.is_classification:
            spec.append({"name": LABEL_OUTPUT, "datatype": "BYTES", "shape": [-1]})
        return spec

    def output_names(self) -> tuple[str, ...]:
        return tuple(o["name"] for o in self.output_spec())

    def prediction_columns(self, out: np.ndarray) -> dict[str, np.ndarray]:
        """The model's outputs as named float64 columns, for drift (prediction drift compares each
        column of the reference with the logged one): `probability` (binary), `probability[<class>]`
        for each class (multiclass), `prediction` (regression)."""
        out = np.asarray(out, dtype=np.float64)
        if self.kind == MULTICLASS:
            return {f"probability[{c}]": out[:, i] for i, c in enumerate(self.classes)}
        return {self.output_name: out}

    def prediction_column_names(self) -> list[str]:
        """The names `prediction_columns` gives, in order."""
        if self.kind == MULTICLASS:
            return [f"probability[{c}]" for c in self.classes]
        return [self.output_name]

    def logged_outputs(self, record: dict[str, Any]) -> np.ndarray | None:
        """The model's output of one prediction-log record (`Task.outputs` of one row, mlops.serve.predlog):
        a float (binary `probability`, regression `prediction`) or the class probabilities (multiclass
        `probabilities`); None when the record lacks it."""
        value = record.get(self.output_name)
        return None if value is None else np.asarray(value, dtype=np.float64)
