"""expectations: behavioural checks of a trained model, declared as data in params.yaml `expectations`.

Three kinds, each evaluated on real rows (the project tests use the test split), through the full
raw-columns -> probability path:

- directional: changing one column (`change: -12` or `set: "Two year"`) moves the positive-class
  probability `up` or `down` on at least `min_share` of the rows it applies to;
- invariance: changing one column (e.g. the id) moves it by at most `max_delta` on every such row;
- minimum functionality: of the rows matching `where`, at least `min_share` are predicted `expect`.

A perturbation applies only to rows where it is meaningful: not to nulls, not past the column's
[min, max] from the model's feature spec, not to rows that already hold the `set` value. An expectation
no row qualifies for fails: it would otherwise pass without checking anything.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import pandas as pd

from mlops.model import LoadedModel
from mlops.params.expectations import Band, Change, Directional, ExpectationsParams, Invariance, Minimum


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


def directional(model: LoadedModel, rows: pd.DataFrame, e: Directional) -> Outcome:
    """Share of changed rows whose probability moved in the expected direction."""
    changed = _perturb(rows, e, _limits(model))
    share = None
    if len(changed):
        before = model.predict_proba(rows.loc[changed.index])
        after = model.predict_proba(changed)
        moved = after > before if e.direction == "up" else after < before
        share = float(moved.mean())
    return Outcome(
        "directional",
        f"probability goes {e.direction} when {_what(e)}",
        len(changed),
        share,
        e.min_share,
        share is not None and share >= e.min_share,
    )


def invariance(model: LoadedModel, rows: pd.DataFrame, e: Invariance) -> Outcome:
    """Largest probability change over the changed rows."""
    changed = _perturb(rows, e, _limits(model))
    delta = None
    if len(changed):
        before = model.predict_proba(rows.loc[changed.index])
        delta = float(np.max(np.abs(model.predict_proba(changed) - before)))
    return Outcome(
        "invariance",
        f"probability moves at most {e.max_delta:g} when {_what(e)}",
        len(changed),
        delta,
        e.max_delta,
        delta is not None and delta <= e.max_delta,
    )


def minimum(model: LoadedModel, rows: pd.DataFrame, e: Minimum) -> Outcome:
    """Share of the rows matching `where` that are predicted `expect`."""
    mask = pd.Series(True, index=rows.index)
    for column, cond in e.where.items():
        if isinstance(cond, Band):
            mask &= rows[column].between(cond.min, cond.max)
        else:
            mask &= rows[column].isin(cond)
    matching = rows[mask.fillna(False).astype(bool)]
    share = None
    if len(matching):
        labels = model.predict_label(model.predict_proba(matching))
        share = float(np.mean([label == e.expect for label in labels]))
    where = ", ".join(
        f"{k} in [{v.min:g}, {v.max:g}]" if isinstance(v, Band) else f"{k} in {v}" for k, v in e.where.items()
    )
    return Outcome(
        "minimum",
        f"rows with {where} are predicted {e.expect!r}",
        len(matching),
        share,
        e.min_share,
        share is not None and share >= e.min_share,
    )


def _limits(model: LoadedModel) -> dict[str, tuple[float, float]]:
    return {
        f["name"]: (float(f["min"]), float(f["max"]))
        for f in model.metadata["features"]
        if f.get("kind") == "numeric"
    }


def evaluate(params: ExpectationsParams, model: LoadedModel, rows: pd.DataFrame) -> list[Outcome]:
    """Evaluate every declared expectation on `rows` (raw feature columns, plus the id if one changes).

    Args:
        params: the `expectations` section.
        model: the loaded model.
        rows: real rows, e.g. the raw test split.

    Returns:
        One outcome per expectation, in declaration order (directional, invariance, minimum).
    """
    rows = rows.reset_index(drop=True)
    return [
        *(directional(model, rows, e) for e in params.directional),
        *(invariance(model, rows, e) for e in params.invariance),
        *(minimum(model, rows, e) for e in params.minimum),
    ]
