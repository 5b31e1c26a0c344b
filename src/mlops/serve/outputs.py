"""outputs: one request's share of the forward pass, laid out for the response, the prediction log and
the metrics, per task (`mlops.task`).

`layout(task)` returns the function the server applies to a request's output rows (float, `[rows]`, or
`[rows, N]` for multiclass), giving `(data, logged, labels)`:

- `data`: each served output's values, flat (row-major), in `Task.output_spec` order, as
  `protocol.response` and `protocol.ResponseTemplate.encode` take them: binary `(probabilities, labels)`,
  multiclass `(class probabilities of row 1, then of row 2, ..., labels)`, regression `(values,)`;
- `logged`: each output's values, one per row (`Task.outputs`), as `PredictionLog.submit` takes them:
  the same lists, except multiclass `probabilities`, one list of N class probabilities per row;
- `labels`: the predicted classes (`Task.labels`) for the predicted-class counter; None for regression.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from mlops.task import BINARY, MULTICLASS, Task

Layout = Callable[[np.ndarray], tuple[tuple[list[Any], ...], tuple[list[Any], ...], list[str] | None]]


def layout(task: Task) -> Layout:
    """The layout function of `task`'s outputs (see the module docstring)."""
    if task.kind == BINARY:
        pos, neg, threshold = task.positive, task.negative, task.threshold

        def binary(out: np.ndarray) -> tuple[tuple[list[Any], ...], tuple[list[Any], ...], list[str]]:
            proba = out.tolist()
            labels = [pos if p >= threshold else neg for p in proba]  # Task.labels, on the list at hand
            data = (proba, labels)
            return data, data, labels

        return binary
    if task.kind == MULTICLASS:

        def multiclass(out: np.ndarray) -> tuple[tuple[list[Any], ...], tuple[list[Any], ...], list[str]]:
            labels = task.labels(out)
            return (out.ravel().tolist(), labels), (out.tolist(), labels), labels

        return multiclass

    def regression(out: np.ndarray) -> tuple[tuple[list[Any], ...], tuple[list[Any], ...], None]:
        data = (out.tolist(),)
        return data, data, None

    return regression
