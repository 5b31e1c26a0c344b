"""featurize: validated raw table -> seeded stratified train/valid/test split, fitted preprocessing.

Outputs under data/processed/: `train|valid|test.parquet` (id, label as 0/1, encoded float32
features) and `preprocess.json` (the fitted state, the feature spec, split sizes and label balance,
and the md5 of the raw table). Preprocessing is fitted on the training rows only.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.model_selection import train_test_split

from mlops import files
from mlops.config import FeaturizeParams, SchemaParams
from mlops.errors import DataError
from mlops.features import Preprocessor
from mlops.validate import read_table

log = logging.getLogger(__name__)

LABEL = "label"
SPLITS = ("train", "valid", "test")


def split(frame: pd.DataFrame, label: str, params: FeaturizeParams) -> dict[str, pd.DataFrame]:
    """Deterministic stratified split into train/valid/test (fractions of all rows)."""
    rest, test = train_test_split(
        frame, test_size=params.test_size, stratify=frame[label], random_state=params.seed
    )
    valid_share = params.valid_size / (1.0 - params.test_size)
    if not 0.0 < valid_share < 1.0:
        raise DataError("featurize: test_size + valid_size must be below 1")
    train, valid = train_test_split(
        rest, test_size=valid_share, stratify=rest[label], random_state=params.seed
    )
    return {"train": train, "valid": valid, "test": test}


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


def encode(frame: pd.DataFrame, pre: Preprocessor, schema: SchemaParams) -> pd.DataFrame:
    """Encoded feature table with the id and the 0/1 label."""
    matrix = pre.transform(frame)
    out = pd.DataFrame(matrix, columns=pre.feature_names, index=frame.index)
    out.insert(0, LABEL, (frame[schema.label.column] == schema.label.positive).astype("int8"))
    out.insert(0, schema.id, frame[schema.id])
    return out.reset_index(drop=True)


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
    log.info("featurize: %s -> %s", data, out_dir)
    raw_md5 = check_validated(data, validation)
    frame = read_table(data)[[schema.id, schema.label.column, *schema.features]]
    parts = split(frame, schema.label.column, params)
    categorical = {k: v.categories for k, v in schema.categorical.items()}
    pre = Preprocessor.fit(parts["train"], list(schema.numeric), categorical)
    balance = {}
    for name in SPLITS:
        encoded = encode(parts[name], pre, schema)
        files.write_parquet(out_dir / f"{name}.parquet", encoded)
        balance[name] = {"rows": int(len(encoded)), "positive_rate": float(np.mean(encoded[LABEL]))}
    state = {
        "preprocessing": pre.to_dict(),
        "feature_names": pre.feature_names,
        "features": feature_spec(schema),
        "id": schema.id,
        "label": {
            "column": schema.label.column,
            "classes": schema.label.classes,
            "positive": schema.label.positive,
        },
        "splits": balance,
        "data_md5": raw_md5,
    }
    files.write_json(out_dir / "preprocess.json", state)
    log.info("featurize: rows %s", {k: v["rows"] for k, v in balance.items()})
    return state
