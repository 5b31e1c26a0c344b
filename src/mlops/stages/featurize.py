"""featurize: validated raw table -> train/valid/test split by a stable hash of the id, fitted preprocessing.

Outputs under data/processed/: `train|valid|test.parquet` (id, the encoded label, encoded float32
features) and `preprocess.json` (the fitted state, the feature spec, split sizes and label balance,
and the md5 of the raw table). The label is encoded by the task (`schema.task`, mlops.task): 0/1 for
binary, the class index for multiclass, the numeric target for regression (whose training-rows mean
and std go to preprocess.json `label.scale`); a label that does not fit the task, or a class with no
rows in a split, stops the stage (exit 3) naming the column, the values and the rule. Preprocessing is fitted on the training rows only. A row's split comes
from its id alone (`mlops.splits`): re-ingesting a grown table never moves a row between splits.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
from pathlib import Path
from typing import Any

import pandas as pd

from mlops import files, splits
from mlops.errors import DataError
from mlops.features import Preprocessor
from mlops.labels import LABEL
from mlops.params.base import Section, Sections
from mlops.params.featurize import FeaturizeParams
from mlops.params.schema import SchemaParams
from mlops.paths import add_paths
from mlops.tables import read_table
from mlops.task import Task

log = logging.getLogger(__name__)

SPLITS = splits.NAMES


def split(frame: pd.DataFrame, id_column: str, params: FeaturizeParams) -> dict[str, pd.DataFrame]:
    """Split rows by a stable hash of their id (`mlops.splits`); each part keeps the table's row order."""
    try:
        which = splits.assign(frame[id_column], params.seed, params.test_size, params.valid_size)
    except ValueError as e:
        raise DataError(str(e)) from e
    parts = {name: frame[which == name] for name in SPLITS}
    empty = [name for name, part in parts.items() if part.empty]
    if empty:
        raise DataError(f"featurize: the {empty[0]} split is empty ({len(frame)} rows); more rows are needed")
    return parts


def feature_spec(schema: SchemaParams) -> list[dict[str, Any]]:
    """The model's input contract: name, dtype, allowed categories or range, nullability."""
    spec: list[dict[str, Any]] = []
    for name, col in schema.numeric.items():
        spec.append(
            {
                "name": name,
                "dtype": "INT64" if col.integer else "FP64",
                "kind": "numeric",
                "min": col.min,
                "max": col.max,
                "nullable": col.nullable,
            }
        )
    for name, col in schema.categorical.items():
        spec.append(
            {
                "name": name,
                "dtype": "BYTES",
                "kind": "categorical",
                "categories": list(col.categories),
                "nullable": col.nullable,
            }
        )
    return spec


def encode(
    frame: pd.DataFrame, pre: Preprocessor, schema: SchemaParams, where: str = "featurize"
) -> pd.DataFrame:
    """Encoded feature table with the id and the encoded label (`Task.encode`)."""
    matrix = pre.transform(frame)
    out = pd.DataFrame(matrix, columns=pre.feature_names, index=frame.index)
    task = Task.from_schema(schema)
    out.insert(0, LABEL, task.encode(frame[schema.label.column], f"{where}: label '{schema.label.column}'"))
    out.insert(0, schema.id, frame[schema.id])
    return out.reset_index(drop=True)


def label_state(task: Task, balance: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """preprocess.json `label`: the task's label section; regression adds `scale`, the training rows'
    target mean and std that training standardizes by and the model's head undoes."""
    out = task.label_section()
    if task.kind == "regression":
        std = balance["train"]["std"]
        out["scale"] = {"mean": balance["train"]["mean"], "std": std if std and std > 0 else 1.0}
    return out


def check_validated(data: Path, validation: Path) -> str:
    """Refuse a table that validate has not passed; return its md5."""
    try:
        report = json.loads(validation.read_text())
    except (OSError, ValueError) as e:
        raise DataError(f"{validation}: no readable validation report; run `mlops validate` first") from e
    md5 = files.file_digest(data, "md5")
    if report.get("data_md5") != md5:
        raise DataError(f"{validation}: reports on another table than {data}; run `mlops validate` again")
    if not report.get("passed"):
        raise DataError(f"{validation}: {data} failed validation; fix the data first")
    return md5


def _pandas(
    schema: SchemaParams, params: FeaturizeParams, data: Path, out_dir: Path
) -> tuple[Preprocessor, dict[str, dict[str, Any]]]:
    """Split, fit and encode in one pandas frame; write `<split>.parquet` files under out_dir."""
    frame = read_table(data)[[schema.id, schema.label.column, *schema.features]]
    parts = split(frame, schema.id, params)
    categorical = {k: v.categories for k, v in schema.categorical.items()}
    nullable = [k for k, v in schema.categorical.items() if v.nullable]
    pre = Preprocessor.fit(parts["train"], list(schema.numeric), categorical, nullable)
    task = Task.from_schema(schema)
    encoded = {name: encode(parts[name], pre, schema, f"{data}, {name} split") for name in SPLITS}
    for name in SPLITS:  # every check before any file is written
        task.require_classes(encoded[name][LABEL].to_numpy(), f"{data}, {name} split")
    balance = {}
    for name in SPLITS:
        target = out_dir / f"{name}.parquet"
        if target.is_dir():  # a Spark run's dataset directory
            shutil.rmtree(target)
        files.write_parquet(target, encoded[name])
        balance[name] = task.target_summary(encoded[name][LABEL].to_numpy())
    return pre, balance


def run(schema: SchemaParams, params: FeaturizeParams, data: Path, validation: Path, out_dir: Path) -> dict:
    """Split, fit preprocessing on train, write the encoded splits and the state.

    Args:
        schema: the `schema` params section.
        params: the `featurize` params section.
        data: the validated raw table.
        validation: the validation report for `data`.
        out_dir: data/processed.

    Returns:
        The preprocess.json content.
    """
    log.info("featurize: %s -> %s (engine %s)", data, out_dir, params.engine)
    raw_md5 = check_validated(data, validation)
    task = Task.from_schema(schema)
    if params.engine == "spark" and task.kind != "binary":
        from mlops.errors import ConfigError

        raise ConfigError(
            f"featurize.engine: spark encodes binary labels only (schema.task: {task.kind}); use engine: pandas"
        )
    if params.engine == "spark":
        from mlops import featurize_spark

        pre, balance = featurize_spark.run(schema, params, data, out_dir, encode)
    else:
        pre, balance = _pandas(schema, params, data, out_dir)
    state = {
        "preprocessing": pre.to_dict(),
        "feature_names": pre.feature_names,
        "features": feature_spec(schema),
        "id": schema.id,
        "task": task.metadata_name,
        "label": label_state(task, balance),
        "splits": balance,
        "data_md5": raw_md5,
    }
    files.write_json(out_dir / "preprocess.json", state)
    log.info("featurize: rows %s", {k: v["rows"] for k, v in balance.items()})
    return state


# ---------------------------------------------------------------- the command: `mlops featurize`
HELP = "split and preprocess the validated table"
"""One line for `mlops --help` (read without importing this module)."""

SECTIONS: dict[str, type[Section]] = {
    "schema": SchemaParams,
    "featurize": FeaturizeParams,
}
"""The params.yaml sections this stage reads (dvc.yaml declares the same), validated alone."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Options of `mlops featurize`; path defaults are the paths dvc.yaml declares."""
    add_paths(p, "--data", "--validation")
    p.add_argument("--out-dir", type=Path, default=Path("data/processed"))


def main(args: argparse.Namespace, params: Sections) -> None:
    """Run `mlops featurize` with its validated sections."""
    run(params.schema, params.featurize, args.data, args.validation, args.out_dir)
