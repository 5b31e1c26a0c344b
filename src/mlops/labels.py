"""labels: the binary task's class <-> 0/1 helpers, and the encoded label column's name.

`schema.label.positive` is the class the model scores (1); the other class of `schema.label.classes`
is 0, whatever their order in params.yaml. Every task's encoding (binary, multiclass, regression) is
defined in `mlops.task.Task`, whose binary rules are these; evaluate's binary plots and the tests use
the helpers here, so a confusion matrix, a metric and a served label cannot disagree about which class
is which.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

LABEL = "label"
"""The 0/1 target column of the encoded splits (data/processed/*.parquet)."""


def negative_class(classes: Sequence[str], positive: str) -> str:
    """The class that maps to 0: the one of the two `classes` that is not `positive`.

    Raises:
        ValueError: `classes` is not two distinct classes of which `positive` is one.
    """
    classes = list(classes)
    if len(classes) != 2 or classes[0] == classes[1] or positive not in classes:
        raise ValueError(f"label: expected two distinct classes including {positive!r}, got {classes}")
    return classes[1] if classes[0] == positive else classes[0]


def to_binary(values: Iterable[Any], positive: str) -> np.ndarray:
    """1 where a raw label value equals the positive class, else 0 (int8)."""
    arr = np.asarray(list(values) if not hasattr(values, "__array__") else values, dtype=object)
    return (arr == positive).astype(np.int8)


def to_classes(positive_flags: Iterable[Any], classes: Sequence[str], positive: str) -> list[str]:
    """Class names for 0/1 (or boolean) values: truthy -> `positive`, else the negative class."""
    negative = negative_class(classes, positive)
    return [positive if flag else negative for flag in positive_flags]


def predict(proba: Iterable[float], threshold: float, classes: Sequence[str], positive: str) -> list[str]:
    """Predicted class names for positive-class probabilities at the decision threshold (p >= t)."""
    return to_classes((p >= threshold for p in proba), classes, positive)


def from_metadata(metadata: dict[str, Any]) -> tuple[list[str], str]:
    """(classes, positive) from a model.json `label` section."""
    label = metadata["label"]
    return list(label["classes"]), label["positive"]
