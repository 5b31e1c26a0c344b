"""compare: the Evidently side of `mlops drift`: typed frames, per-column drift tests, missing and
unknown-category rates.

`compare()` runs one Evidently `ValueDrift` per column with the params.yaml `drift` test for its dtype
(numeric / categorical), each of the task's prediction columns (`Task.prediction_columns`: binary
`probability`, multiclass `probability[<class>]`, regression `prediction`) with `drift.prediction`, and
the target (when labelled rows are given) with the test of its dtype (class names: categorical, a
regression target: numeric). It reads each column's verdict from the test Evidently attaches to it, so
the threshold's direction (a p-value below it, a distance at or above it) is Evidently's.
`check_methods()` refuses an unknown stattest name before any work.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import pandas as pd

from mlops.errors import ConfigError, MlopsError
from mlops.params.drift import DriftParams, StatTest
from mlops.params.schema import SchemaParams

PREDICTION = "probability"
"""The binary task's prediction column (mlops.task: `Task.prediction_column_names()` in general)."""
NUMERIC, CATEGORICAL = "numeric", "categorical"


def _as_text(column: pd.Series) -> pd.Series:
    return column.map(lambda v: None if v is None or v != v else str(v)).astype(object)


def _as_float(column: pd.Series) -> pd.Series:
    return pd.to_numeric(column, errors="coerce").astype("float64")


def prepare(
    frame: pd.DataFrame,
    schema: SchemaParams,
    predictions: Sequence[str] = (PREDICTION,),
    target: tuple[str, str] | None = None,
) -> pd.DataFrame:
    """Feature columns typed by the schema: numeric as float (unparsable -> null), categorical as str;
    the prediction columns the frame has (float), and the target column when given (`(name, kind)`,
    kind `numeric` or `categorical`) and present."""
    out = {}
    for name in schema.numeric:
        out[name] = _as_float(frame[name])
    for name in schema.categorical:
        out[name] = _as_text(frame[name])
    for name in predictions:
        if name in frame.columns:
            out[name] = _as_float(frame[name])
    if target is not None and target[0] in frame.columns:
        name, kind = target
        out[name] = _as_float(frame[name]) if kind == NUMERIC else _as_text(frame[name])
    return pd.DataFrame(out, index=frame.index)


def rates(frame: pd.DataFrame, schema: SchemaParams) -> dict[str, dict[str, float | None]]:
    """Per feature: share of null values; for categorical ones, share of values outside the schema."""
    out: dict[str, dict[str, float | None]] = {}
    n = len(frame)
    for name in schema.features:
        col = frame[name]
        missing = float(col.isna().mean()) if n else 0.0
        unknown = None
        if name in schema.categorical:
            known = set(schema.categorical[name].categories)
            present = col.dropna()
            unknown = float((~present.isin(known)).sum() / n) if n else 0.0
        out[name] = {"missing_rate": missing, "unknown_category_rate": unknown}
    return out


def check_methods(params: DriftParams) -> None:
    """Every configured stattest exists in Evidently and applies to its dtype (else ConfigError, exit 2)."""
    from evidently.legacy.calculations.stattests import registry
    from evidently.legacy.core import ColumnType

    kinds = {"numeric": ColumnType.Numerical, "categorical": ColumnType.Categorical}
    for key, test, kind in (
        ("numeric", params.numeric, "numeric"),
        ("categorical", params.categorical, "categorical"),
        ("prediction", params.prediction, "numeric"),
    ):
        if test is None or test.method == "auto":
            continue
        try:
            registry.get_registered_stattest(test.method, kinds[kind])
        except ValueError as e:  # StatTestNotFoundError, StatTestInvalidFeatureTypeError
            raise ConfigError(f"params drift.{key}.method: {e}") from e


def _metric(column: str, test: StatTest) -> Any:
    from evidently.metrics import ValueDrift

    method = None if test.method == "auto" else test.method
    return ValueDrift(column=column, method=method, threshold=test.threshold)


def compare(
    current: pd.DataFrame,
    reference: pd.DataFrame,
    schema: SchemaParams,
    params: DriftParams,
    predictions: Sequence[str] = (PREDICTION,),
    target: tuple[str, str] | None = None,
) -> tuple[dict[str, Any], Any]:
    """Run Evidently on prepared frames; returns (per-column results, the Evidently snapshot).

    Args:
        current, reference: frames of `prepare`.
        schema: the features to test.
        params: the tests (`drift.numeric`, `drift.categorical`, `drift.prediction`).
        predictions: the prediction columns, tested with `drift.prediction` where both frames have them.
        target: `(column, kind)` of the label, tested with the test of its kind where both frames have
            it (null values, e.g. rows without a known label, are left out by Evidently).

    Returns:
        Per column: {kind, method, score, threshold, drifted}; a column with no values on either side is
        not tested (method None, drifted False, note). And the Evidently snapshot.
    """
    from evidently import DataDefinition, Dataset, Report

    tests: dict[str, tuple[str, StatTest]] = {n: (NUMERIC, params.numeric) for n in schema.numeric}
    tests |= {n: (CATEGORICAL, params.categorical) for n in schema.categorical}
    if params.prediction is not None:
        for name in predictions:
            if name in current and name in reference:
                tests[name] = (NUMERIC, params.prediction)
    if target is not None and target[0] in current and target[0] in reference:
        name, kind = target
        tests[name] = (kind, params.numeric if kind == NUMERIC else params.categorical)
    results: dict[str, Any] = {}
    runnable = []
    for name, (kind, test) in tests.items():
        if current[name].notna().any() and reference[name].notna().any():
            runnable.append(name)
        else:
            results[name] = {"kind": kind, "method": None, "score": None, "threshold": test.threshold}
            results[name] |= {"drifted": False, "note": "no values in the window or the reference"}
    numeric = [n for n in runnable if tests[n][0] == NUMERIC]
    definition = DataDefinition(
        numerical_columns=numeric, categorical_columns=[n for n in runnable if n not in numeric]
    )
    metrics = [_metric(n, tests[n][1]) for n in runnable]
    report = Report(metrics, include_tests=True)
    snapshot = report.run(
        current_data=Dataset.from_pandas(current[runnable], data_definition=definition),
        reference_data=Dataset.from_pandas(reference[runnable], data_definition=definition),
    )
    data = snapshot.dict()
    status = {t["metric_config"]["metric_id"]: t for t in data.get("tests", [])}
    for metric in data["metrics"]:
        column = metric["config"]["column"]
        test = status.get(metric["id"])
        if test is None:
            raise MlopsError(f"drift: Evidently returned no drift test for column {column!r}")
        resolved = test["metric_config"]["params"]
        results[column] = {
            "kind": tests[column][0],
            "method": resolved.get("method"),
            "score": float(metric["value"]),
            "threshold": float(resolved.get("threshold") or tests[column][1].threshold),
            "drifted": test["status"] == "FAIL",
        }
    return results, snapshot
