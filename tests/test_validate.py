"""validate: the data contract. Corrupted tables exit 3 naming column, rule and example ids."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from mlops.errors import DataError
from mlops.stages import validate


@pytest.fixture(scope="module")
def raw(pipeline) -> pd.DataFrame:
    return pd.read_parquet(pipeline.raw)


def corrupt(raw: pd.DataFrame, tmp_path, change) -> tuple:
    frame = raw.copy()
    change(frame)
    path = tmp_path / "raw.parquet"
    frame.to_parquet(path, index=False)
    return path, tmp_path / "validation.json"


def test_demo_table_passes_and_report_is_complete(pipeline, raw):
    report = json.loads(pipeline.validation.read_text())
    assert report["passed"] is True and report["failures"] == []
    assert report["rows"] == len(raw) == 7043
    assert report["label_counts"] == {"No": 5174, "Yes": 1869}


def setv(rows, column, value):
    """A change that writes `value` into `column` at the given row positions."""
    return lambda f: f.loc.__setitem__((rows, column), value)


@pytest.mark.parametrize(
    ("change", "column", "rule", "ids"),
    [
        (setv([3, 7], "contract", "Lifetime"), "contract", "allowed_categories", [4, 8]),
        (setv([5], "tenure", -3), "tenure", "range[0.0, 120.0]", [6]),
        (setv([0], "monthly_charges", np.nan), "monthly_charges", "not_nullable", [1]),
        (setv([9], "churn", "Maybe"), "churn", "label_values", [10]),
        (setv([1], "customer_id", 1), "customer_id", "field_uniqueness", [1, 1]),
        (lambda f: f.__setitem__("tenure", f["tenure"] + 0.5), "tenure", "integer", [1, 2, 3, 4, 5]),
    ],
    ids=["unknown-category", "out-of-range", "null", "bad-label", "duplicate-id", "not-integer"],
)
def test_violation_names_column_rule_and_rows(raw, tmp_path, change, column, rule, ids, params):
    data, report = corrupt(raw, tmp_path, change)
    with pytest.raises(DataError) as err:
        validate.run(params.schema_, params.validate_.max_examples, data, report)
    assert f"column '{column}' fails {rule}" in str(err.value)
    written = json.loads(report.read_text())
    assert written["passed"] is False
    failure = next(f for f in written["failures"] if f["column"] == column and f["rule"] == rule)
    assert failure["example_ids"] == ids


def test_missing_column_and_too_few_rows(raw, tmp_path, params):
    data, report = corrupt(raw.head(50), tmp_path, lambda f: f.drop(columns=["contract"], inplace=True))
    with pytest.raises(DataError) as err:
        validate.run(params.schema_, 5, data, report)
    assert "column 'contract' fails column_present" in str(err.value)
    assert "min_rows[1000]" in str(err.value)


def test_string_column_where_numbers_expected(raw, tmp_path, params):
    # the raw Kaggle CSV has total_charges as text with blanks: the contract demands numbers
    data, report = corrupt(
        raw, tmp_path, lambda f: f.__setitem__("total_charges", f["total_charges"].astype(str))
    )
    with pytest.raises(DataError, match="column 'total_charges' fails numeric_dtype"):
        validate.run(params.schema_, 5, data, report)


def test_unreadable_table_is_a_data_error(tmp_path, params):
    bad = tmp_path / "raw.parquet"
    bad.write_bytes(b"PAR1 this is not parquet")
    with pytest.raises(DataError, match="not a readable Parquet table"):
        validate.run(params.schema_, 5, bad, tmp_path / "v.json")
    with pytest.raises(DataError, match="file not found"):
        validate.run(params.schema_, 5, tmp_path / "absent.parquet", tmp_path / "v.json")


@pytest.mark.parametrize(
    "change",
    [
        lambda f: None,
        setv([3, 7], "contract", "Lifetime"),
        setv([5], "tenure", -3),
        setv([0], "monthly_charges", np.nan),
        setv([9], "churn", "Maybe"),
        setv([1], "customer_id", 1),
        lambda f: f.__setitem__("tenure", f["tenure"] + 0.5),
        lambda f: f.drop(columns=["contract"], inplace=True),
        lambda f: f.__setitem__("total_charges", f["total_charges"].astype(str)),
        lambda f: f.drop(index=f.index[50:], inplace=True),
    ],
    ids=["clean", "category", "range", "null", "label", "duplicate", "integer", "missing", "dtype", "rows"],
)
def test_fast_check_agrees_with_pandera(raw, params, change):
    """`passes` (no pandera import) accepts exactly the tables pandera accepts."""
    import pandera.pandas as pa

    frame = raw.copy()
    change(frame)
    try:
        validate.build_schema(params.schema_).validate(frame, lazy=True)
        pandera_passes = True
    except pa.errors.SchemaErrors:
        pandera_passes = False
    assert validate.passes(frame, params.schema_) is pandera_passes
