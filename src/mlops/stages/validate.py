"""validate: raw table -> reports/validation.json, checked against params.yaml `schema` with pandera.

Rules: required columns present, numeric dtype and range, integrality, allowed categories, nulls,
unique non-null ids, label values (classification: values from `schema.label.classes` and at least two
of them present; regression: a numeric, finite target), minimum row count. The report is written in both outcomes (a CI
artifact reviewers need most when it fails) and records the md5 of the table it judged, so `featurize`
refuses any table that has not passed. On a violation the stage exits 3 naming column, rule and
example row ids.
"""

from __future__ import annotations

import argparse
import logging
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mlops import files
from mlops.errors import DataError
from mlops.params.base import Section, Sections
from mlops.params.schema import SchemaParams
from mlops.params.validate import ValidateParams
from mlops.paths import add_paths
from mlops.tables import read_table
from mlops.task import class_names

log = logging.getLogger(__name__)


@dataclass
class ColumnRules:
    """What one column must satisfy: pandera's Column arguments, checks as (name, function) pairs."""

    nullable: bool
    unique: bool = False
    checks: list[tuple[str, Callable[[pd.Series], Any]]] = field(default_factory=list)


def rules(
    schema: SchemaParams,
) -> tuple[dict[str, ColumnRules], list[tuple[str, Callable[[pd.DataFrame], Any]]]]:
    """The `schema` params as column rules and table checks (one definition for both checkers below)."""

    def numeric_dtype(s: pd.Series) -> bool:
        return pd.api.types.is_numeric_dtype(s) and not pd.api.types.is_bool_dtype(s)

    def whole(s: pd.Series) -> pd.Series:
        return (s.dropna() % 1 == 0) if numeric_dtype(s) else pd.Series(False, index=s.index)

    if schema.task == "regression":  # a numeric, finite target
        label_checks = [
            ("numeric_dtype", numeric_dtype),
            ("finite", lambda s: np.isfinite(s) if numeric_dtype(s) else pd.Series(False, index=s.index)),
        ]
    else:
        label_checks = [("label_values", lambda s: class_names(s).isin(schema.label.classes))]
    columns = {
        schema.id: ColumnRules(nullable=False, unique=True),
        schema.label.column: ColumnRules(nullable=False, checks=label_checks),
    }
    for name, spec in schema.numeric.items():
        checks = [
            ("numeric_dtype", numeric_dtype),
            (f"range[{spec.min}, {spec.max}]", lambda s, lo=spec.min, hi=spec.max: s.between(lo, hi)),
        ]
        if spec.integer:
            checks.append(("integer", whole))
        columns[name] = ColumnRules(nullable=spec.nullable, checks=checks)
    for name, spec in schema.categorical.items():
        columns[name] = ColumnRules(
            nullable=spec.nullable,
            checks=[("allowed_categories", lambda s, allowed=spec.categories: s.isin(allowed))],
        )
    table = [(f"min_rows[{schema.min_rows}]", lambda df: len(df) >= schema.min_rows)]
    if schema.task != "regression":  # a label with one class teaches nothing
        label = schema.label.column
        table.append(
            (
                f"label_classes[{label}: >=2 of {schema.label.classes}]",
                lambda df: (
                    label not in df.columns or df[label].dropna().nunique() >= 2
                ),  # absent: column_present says so
            )
        )
    return columns, table


def build_schema(schema: SchemaParams):  # -> pandera.pandas.DataFrameSchema
    """Translate the `schema` params into a pandera DataFrameSchema."""
    import pandera.pandas as pa

    columns, table = rules(schema)
    return pa.DataFrameSchema(
        {
            name: pa.Column(
                nullable=r.nullable,
                unique=r.unique,
                checks=[pa.Check(fn, name=check) for check, fn in r.checks],
                title="id" if name == schema.id else None,
            )
            for name, r in columns.items()
        },
        checks=[pa.Check(fn, name=check) for check, fn in table],
        strict=False,  # extra source columns are allowed; only declared ones reach the model
    )


def passes(frame: pd.DataFrame, schema: SchemaParams) -> bool:
    """True only when pandera would find nothing: every column present, nulls only where allowed,
    unique ids, every check true on the non-null values (pandera ignores nulls in checks) and every
    table check true. Any doubt (a check raising) is False. The passing table, the usual case, is then
    judged without importing pandera (~0.5 s); a failing one gets pandera's detailed report."""
    columns, table = rules(schema)
    try:
        for name, r in columns.items():
            if name not in frame.columns:
                return False
            s = frame[name]
            if (not r.nullable and s.isna().any()) or (r.unique and s.duplicated().any()):
                return False
            values = s.dropna()
            for _, fn in r.checks:
                out = fn(values)
                if not (bool(out.all()) if isinstance(out, pd.Series) else bool(out)):
                    return False
        return all(bool(fn(frame)) for _, fn in table)
    except Exception:  # noqa: BLE001 - pandera reports a check that raises as a failure: let it
        return False


def check(frame: pd.DataFrame, schema: SchemaParams, max_examples: int) -> list[dict[str, Any]]:
    """Validate `frame`; return one failure record per (column, rule), empty when the table passes."""
    if passes(frame, schema):
        return []
    import pandera.pandas as pa

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)  # pandera's internal concat warning
            build_schema(schema).validate(frame, lazy=True)
    except pa.errors.SchemaErrors as e:
        cases = e.failure_cases
    else:
        return []
    failures = []
    ids = frame[schema.id] if schema.id in frame.columns else None
    for (column, rule), group in cases.groupby(
        [cases["column"].fillna("(table)"), cases["check"].astype(str)], sort=True, dropna=False
    ):
        if rule == "column_in_dataframe":
            column, rule = str(group["failure_case"].iloc[0]), "column_present"
        index = sorted(int(i) for i in group["index"].dropna().tolist())[:max_examples]  # first rows first
        if index:
            group = group.set_index(group["index"].astype("Int64")).loc[index]
        row_ids = (
            [ids.iloc[i].item() if hasattr(ids.iloc[i], "item") else ids.iloc[i] for i in index]
            if (ids is not None and index)
            else []
        )
        values = [
            None if pd.isna(v) else (v.item() if hasattr(v, "item") else v)
            for v in group["failure_case"].tolist()[:max_examples]
        ]
        failures.append(
            {
                "column": column,
                "rule": rule,
                "count": int(len(group)),
                "example_rows": index,
                "example_ids": row_ids,
                "example_values": values,
            }
        )
    return failures


def summarise(failures: list[dict[str, Any]]) -> str:
    """One line naming each failed column and rule with example row ids."""
    parts = []
    for f in failures:
        where = f" (ids {f['example_ids']})" if f["example_ids"] else ""
        vals = (
            f" values {f['example_values']}" if f["example_values"] and f["rule"] != "column_present" else ""
        )
        parts.append(f"column '{f['column']}' fails {f['rule']} in {f['count']} row(s){where}{vals}")
    return "; ".join(parts)


def run(schema: SchemaParams, max_examples: int, data: Path, report: Path) -> dict[str, Any]:
    """Validate the raw table at `data`, write `report`, raise DataError (exit 3) on any violation.

    Args:
        schema: the `schema` params section.
        max_examples: example rows per failed rule (`validate.max_examples`).
        data: the raw table (Parquet).
        report: where to write the validation report (JSON).

    Returns:
        The report written.
    """
    log.info("validate: %s", data)
    frame = read_table(data)
    failures = check(frame, schema, max_examples)
    label = frame[schema.label.column] if schema.label.column in frame.columns else pd.Series(dtype=object)
    result = {
        "data": str(data),
        "data_md5": files.file_digest(data, "md5"),
        "rows": int(len(frame)),
        "columns": int(frame.shape[1]),
        "passed": not failures,
        "failures": failures,
    }
    if schema.task == "regression":
        target = pd.to_numeric(label, errors="coerce")
        target = target[np.isfinite(target)]
        result["label_summary"] = {
            k: (float(getattr(target, k)()) if len(target) else None) for k in ("mean", "std", "min", "max")
        }
    else:
        result["label_counts"] = {str(k): int(v) for k, v in label.value_counts().sort_index().items()}
    files.write_json(report, result)
    if failures:
        raise DataError(f"{data}: schema validation failed: {summarise(failures)} (report: {report})")
    log.info("validate: %d rows passed; report %s", len(frame), report)
    return result


# ---------------------------------------------------------------- the command: `mlops validate`
HELP = "check the raw table against params.yaml `schema` (exit 3 on violation)"
"""One line for `mlops --help` (read without importing this module)."""

SECTIONS: dict[str, type[Section]] = {
    "schema": SchemaParams,
    "validate": ValidateParams,
}
"""The params.yaml sections this stage reads (dvc.yaml declares the same), validated alone."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Options of `mlops validate`; path defaults are the paths dvc.yaml declares."""
    add_paths(p, "--data")
    p.add_argument("--report", type=Path, default=Path("reports/validation.json"))


def main(args: argparse.Namespace, params: Sections) -> None:
    """Run `mlops validate` with its validated sections."""
    run(params.schema, params.validate.max_examples, args.data, args.report)
