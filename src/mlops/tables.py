"""tables: reading the pipeline's Parquet tables, with errors that name the file.

`read_table` reads any table; `split_rows` joins the test split's ids (data/processed/test.parquet)
back to the raw table, so evaluate and the gate score the raw feature values exactly as served.
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from mlops.errors import DataError
from mlops.labels import LABEL


def read_table(path: Path) -> pd.DataFrame:
    """Read a Parquet table, turning a missing or corrupt file into a DataError naming it."""
    try:
        return pd.read_parquet(path)
    except FileNotFoundError as e:
        raise DataError(f"{path}: file not found") from e
    except Exception as e:  # noqa: BLE001 - pyarrow raises many types for corrupt files
        raise DataError(f"{path}: not a readable Parquet table ({type(e).__name__}: {e})") from e


def split_rows(data: Path, test: Path, id_column: str) -> pd.DataFrame:
    """Raw feature rows of the test split (joined on the id), with the 0/1 label column `LABEL`."""
    try:
        ids = pd.read_parquet(test, columns=[id_column, LABEL])
    except FileNotFoundError as e:
        raise DataError(f"{test}: file not found; run `mlops featurize` first") from e
    except Exception as e:  # noqa: BLE001 - pyarrow: missing column or corrupt file
        raise DataError(
            f"{test}: no readable '{id_column}'/'{LABEL}' columns ({type(e).__name__}: {e})"
        ) from e
    raw = read_table(data)
    if id_column not in raw.columns:
        raise DataError(f"{data}: no id column '{id_column}'")
    rows = ids.merge(raw, on=id_column, how="left", validate="one_to_one", indicator=True)
    missing = rows[id_column][rows.pop("_merge") == "left_only"]
    if len(missing):
        raise DataError(
            f"{data}: {len(missing)} test id(s) of {test} are missing (e.g. {missing.iloc[0]!r}); rerun featurize"
        )
    return rows


split_rows.__test__ = False  # type: ignore[attr-defined]  # a helper, not a pytest test, when imported
