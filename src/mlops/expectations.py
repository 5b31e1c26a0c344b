"""expectations: behavioural checks of a trained model, declared as data in params.yaml `expectations`.

Three kinds, each evaluated on real rows (the project tests use the test split), through the full
raw-columns -> model output path (`Scorer.predict_proba`; what the output is follows the model's task,
mlops.task):

- directional: changing one column (`change: -12` or `set: "Two year"`) moves the watched output `up`
  or `down` on at least `min_share` of the rows it applies to: the positive-class probability (binary),
  the probability of `target_class` (multiclass) or the predicted value (regression);
- invariance: changing one column (e.g. the id) moves the outputs by at most `max_delta` on every such
  row: the positive-class probability (binary), every class probability (multiclass), the predicted
  value in the target's units (regression);
- minimum functionality: of the rows matching `where`, at least `min_share` are predicted `expect`: a
  class (classification) or a value inside the band `{min, max}` (regression).

A perturbation applies only to rows where it is meaningful: not to nulls, not past the column's
[min, max] from the model's feature spec, not to rows that already hold the `set` value. An expectation
no row qualifies for fails: it would otherwise pass without checking anything. An expectation that does
not fit the model's task (a `target_class` the model lacks, a band for a classifier) raises ValueError:
params.yaml and the model disagree, so there is nothing to judge.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd

from mlops.params.expectations import Band, Change, Directional, ExpectationsParams, Invariance, Minimum
from mlops.scorer import Scorer
from mlops.task import BINARY, MULTICLASS, REGRESSION


@dataclass(frozen=True)
class Outcome:
    """The verdict of one expectation."""

    kind: str
    description: str
    rows: int
    value: float | None
    bound: float
    passed: bool

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return asdict(self)


def _perturb(rows: pd.DataFrame, c: Change, limits: dict[str, tuple[float, float]]) -> pd.DataFrame:
    """The rows the change applies to, with the change made (the input frame is left as is)."""
    column = rows[c.feature]
    if c.set is not None:
        keep = column.isna() | (column != c.set)
        changed = rows[keep].copy()
        changed[c.feature] = pd.Series([c.set] * len(changed), index=changed.index, dtype=object)
        return changed
    moved = pd.to_numeric(column, errors="coerce") + c.change
    lo, hi = limits.get(c.feature, (-np.inf, np.inf))
    keep = moved.notna() & (moved >= lo) & (moved <= hi)
    changed = rows[keep].copy()
    changed[c.feature] = moved[keep]
    return changed


def _what(c: Change) -> str:
    return f"{c.feature} {'set to ' + repr(c.set) if c.set is not None else f'changed by {c.change:+g}'}"


def _watched(model: Scorer, e: Directional) -> tuple[int | None, str]:
    """The output a directional expectation watches: (its column for multiclass, else None; its name).

    Raises:
        ValueError: a multiclass model without a `target_class` of its classes, or a `target_class` on a
            model of another task.
    """
    task = model.task
    if task.kind == MULTICLASS:
        if e.target_class not in task.classes:
            raise ValueError(
                f"directional expectation on '{e.feature}': target_class {e.target_class!r} is not a "
                f"class of the multiclass model {model.name!r} ({list(task.classes)})"
            )
        return task.classes.index(e.target_class), f"probability of {e.target_class!r}"
    if e.target_class is not None:
        raise ValueError(
            f"directional expectation on '{e.feature}': target_class {e.target_class!r} given, but the "
            f"model {model.name!r} is {task.kind} (only a multiclass model has one)"
        )
    return None, "probability" if task.kind == BINARY else "prediction"


def directional(model: Scorer, rows: pd.DataFrame, e: Directional) -> Outcome:
    """Share of changed rows whose watched output (positive-class probability, the `target_class`
    probability or the predicted value) moved in the expected direction."""
    column, name = _watched(model, e)
    changed = _perturb(rows, e, _limits(model))
    share = None
    if len(changed):
        before = model.predict_proba(rows.loc[changed.index])
        after = model.predict_proba(changed)
        if column is not None:
            before, after = before[:, column], after[:, column]
        moved = after > before if e.direction == "up" else after < before
        share = float(moved.mean())
    return Outcome(
        "directional",
        f"{name} goes {e.direction} when {_what(e)}",
        len(changed),
        share,
        e.min_share,
        share is not None and share >= e.min_share,
    )


_INVARIANT = {
    BINARY: "probability moves",
    MULTICLASS: "every class probability moves",
    REGRESSION: "prediction moves",
}


def invariance(model: Scorer, rows: pd.DataFrame, e: Invariance) -> Outcome:
    """Largest change of any output (every class probability for multiclass; target units for
    regression) over the changed rows."""
    changed = _perturb(rows, e, _limits(model))
    delta = None
    if len(changed):
        before = model.predict_proba(rows.loc[changed.index])
        delta = float(np.max(np.abs(model.predict_proba(changed) - before)))
    return Outcome(
        "invariance",
        f"{_INVARIANT[model.task.kind]} at most {e.max_delta:g} when {_what(e)}",
        len(changed),
        delta,
        e.max_delta,
        delta is not None and delta <= e.max_delta,
    )


def minimum(model: Scorer, rows: pd.DataFrame, e: Minimum) -> Outcome:
    """Share of the rows matching `where` that are predicted `expect` (a class), or whose predicted value
    lies in the band `expect` (regression).

    Raises:
        ValueError: a band for a classifier, or a class for a regression model.
    """
    band = isinstance(e.expect, Band)
    if band == model.task.is_classification:
        wanted = "a label class" if model.task.is_classification else "a band {min, max} of predicted values"
        raise ValueError(
            f"minimum expectation: expect {e.expect!r} does not fit the {model.task.kind} model "
            f"{model.name!r} (expected {wanted})"
        )
    mask = pd.Series(True, index=rows.index)
    for column, cond in e.where.items():
        if isinstance(cond, Band):
            mask &= rows[column].between(cond.min, cond.max)
        else:
            mask &= rows[column].isin(cond)
    matching = rows[mask.fillna(False).astype(bool)]
    share = None
    if len(matching):
        out = model.predict_proba(matching)
        if isinstance(e.expect, Band):
            share = float(np.mean((out >= e.expect.min) & (out <= e.expect.max)))
        else:
            share = float(np.mean([label == e.expect for label in model.predict_label(out)]))
    where = ", ".join(
        f"{k} in [{v.min:g}, {v.max:g}]" if isinstance(v, Band) else f"{k} in {v}" for k, v in e.where.items()
    )
    expected = f"in [{e.expect.min:g}, {e.expect.max:g}]" if isinstance(e.expect, Band) else repr(e.expect)
    return Outcome(
        "minimum",
        f"rows with {where} are predicted {expected}",
        len(matching),
        share,
        e.min_share,
        share is not None and share >= e.min_share,
    )


def _limits(model: Scorer) -> dict[str, tuple[float, float]]:
    return {
        f["name"]: (float(f["min"]), float(f["max"]))
        for f in model.metadata["features"]
        if f.get("kind") == "numeric"
    }


def evaluate(params: ExpectationsParams, model: Scorer, rows: pd.DataFrame) -> list[Outcome]:
    """Evaluate every declared expectation on `rows` (raw feature columns, plus the id if one changes).

    Args:
        params: the `expectations` section.
        model: the loaded model (torch or ONNX Runtime); its task decides what each expectation watches.
        rows: real rows, e.g. the raw test split.

    Returns:
        One outcome per expectation, in declaration order (directional, invariance, minimum).

    Raises:
        ValueError: an expectation does not fit the model's task (see `directional`, `minimum`).
    """
    rows = rows.reset_index(drop=True)
    return [
        *(directional(model, rows, e) for e in params.directional),
        *(invariance(model, rows, e) for e in params.invariance),
        *(minimum(model, rows, e) for e in params.minimum),
    ]
