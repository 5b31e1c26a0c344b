"""Project tests, data: the ingested table meets the schema, every corruption the schema implies is
caught naming its column, and the splits are disjoint, sized as configured and labelled as the raw table.

Derived from params.yaml `schema` (its `task` included) and `featurize`; nothing here names a column of a
particular table.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pandas as pd
import pytest

from mlops.config import load_params
from mlops.labels import LABEL
from mlops.stages import validate
from mlops.task import class_names

from .cases import Corruption, corruptions
from .conftest import PROJECT_PARAMS

SCHEMA = load_params(PROJECT_PARAMS).schema_
CASES = corruptions(SCHEMA)


def test_ingested_table_meets_the_data_contract(project, raw, project_params):
    """The whole ingested table passes every schema rule, and validate's report says so for this table:
    label values among the classes (classification) or a numeric, finite target (regression)."""
    schema = project_params.schema_
    assert validate.check(raw, schema, max_examples=5) == []
    report = json.loads(project.validation.read_text())
    assert report["passed"] is True and report["rows"] == len(raw) >= schema.min_rows
    label = raw[schema.label.column]
    if schema.task == "regression":
        assert pd.api.types.is_numeric_dtype(label) and not pd.api.types.is_bool_dtype(label), label.dtype
        assert np.isfinite(label.to_numpy(dtype=np.float64)).all()
    else:
        assert set(class_names(label).unique()) <= set(schema.label.classes)  # integer codes as "1", "2"...
    assert raw[schema.id].is_unique


def test_every_schema_column_has_corruptions():
    """Each declared column gets at least one generated corruption (the list below is not vacuous)."""
    covered = {c.column for c in CASES}
    assert covered >= {SCHEMA.id, SCHEMA.label.column, *SCHEMA.features}


@pytest.mark.parametrize("case", CASES, ids=lambda c: f"{c.column}:{c.what}")
def test_validation_catches_the_corruption_naming_the_column(case: Corruption, raw, project_params):
    """One bad value (or a dropped column, a duplicated id, too few rows) fails validation; the failures
    name exactly the corrupted column and include the expected rule."""
    schema = project_params.schema_
    base = raw.head(max(schema.min_rows, 2)).reset_index(drop=True)
    failures = validate.check(case.apply(base, schema.min_rows), schema, max_examples=5)
    assert failures, f"{case.what} in '{case.column}' passed validation"
    assert {f["column"] for f in failures} == {case.column}, failures
    assert any(f["rule"].startswith(case.rule) for f in failures), failures
    assert case.column in validate.summarise(failures)


def test_splits_are_disjoint_and_cover_the_table(splits, raw, project_params):
    """No id is in two splits; together the splits hold every ingested row exactly once."""
    id_column = project_params.schema_.id
    ids = {name: set(part[id_column]) for name, part in splits.items()}
    assert (
        not ids["train"] & ids["valid"] and not ids["train"] & ids["test"] and not ids["valid"] & ids["test"]
    )
    assert sum(len(part) for part in splits.values()) == len(raw)
    assert ids["train"] | ids["valid"] | ids["test"] == set(raw[id_column])


def test_split_sizes_match_the_configured_fractions(splits, raw, project_params):
    """Each split's size is its configured fraction of the table, up to sampling noise (5 sigma)."""
    n = len(raw)
    f = project_params.featurize
    for name, share in (
        ("test", f.test_size),
        ("valid", f.valid_size),
        ("train", 1 - f.test_size - f.valid_size),
    ):
        slack = 5 * math.sqrt(n * share * (1 - share)) + 2
        assert abs(len(splits[name]) - share * n) <= slack, (name, len(splits[name]), share * n)


def _encoded_truth(raw: pd.DataFrame, schema) -> pd.Series:
    """The encoded label featurize must write for each raw row (by id), derived here from the schema:
    1 for `positive`, else 0 (binary); the index in `classes` (multiclass); the raw target (regression)."""
    column = raw.set_index(schema.id)[schema.label.column]
    if schema.task != "regression":
        column = class_names(column)
    if schema.task == "binary":
        return column.eq(schema.label.positive).astype(np.float64)
    if schema.task == "multiclass":
        return column.map({c: i for i, c in enumerate(schema.label.classes)}).astype(np.float64)
    return column.astype(np.float64)


def test_split_labels_match_the_raw_table(splits, raw, project_params):
    """The encoded label of every split row is its raw label: 0/1 through `schema.label.positive`
    (binary), the class index in `schema.label.classes` (multiclass), the target itself (regression);
    and each split's label distribution is the table's up to sampling noise (5 sigma): the positive rate,
    every class's share, or the target's mean."""
    schema = project_params.schema_
    truth = _encoded_truth(raw, schema)
    assert truth.notna().all()
    for name, part in splits.items():
        expected = truth.loc[part[schema.id]].to_numpy()
        assert np.array_equal(part[LABEL].to_numpy(dtype=np.float64), expected), name
        n = len(part)
        if schema.task == "regression":
            slack = 5 * truth.std() / math.sqrt(n) + 1e-9 * abs(truth.mean())
            assert abs(part[LABEL].mean() - truth.mean()) <= slack, (name, part[LABEL].mean(), truth.mean())
            continue
        for code in range(len(schema.label.classes) if schema.task == "multiclass" else 2):
            rate = float((truth == code).mean())
            share = float((part[LABEL] == code).mean())
            slack = 5 * math.sqrt(rate * (1 - rate) / n) + 0.01
            assert abs(share - rate) <= slack, (name, code, share, rate)
