"""ingest: every source kind against a real endpoint (local HTTP server, SQLite, PostgreSQL)."""

from __future__ import annotations

import functools
import http.server
import logging
import shutil
import subprocess
import threading
from pathlib import Path

import pandas as pd
import pytest
import sqlalchemy as sa

from mlops import ingest
from mlops.config import FileSource, IngestParams, SqlSource
from mlops.errors import ConfigError, DataError

from conftest import free_port

TABLE = pd.DataFrame({"rownames": [1, 2, 3], "tenure": [1, 20, 40], "churn": ["Yes", "No", "No"]})


def file_params(uri: str, fmt: str = "auto") -> IngestParams:
    return IngestParams(
        source="file", file=FileSource(uri=uri, format=fmt), rename={"rownames": "customer_id"}
    )


def sql_params(
    query: str = "SELECT * FROM churn ORDER BY rownames", env: str = "TEST_SQL_URL"
) -> IngestParams:
    return IngestParams(
        source="sql", sql=SqlSource(url_env=env, query=query), rename={"rownames": "customer_id"}
    )


def expected() -> pd.DataFrame:
    return TABLE.rename(columns={"rownames": "customer_id"})


def test_demo_source(params, tmp_path):
    out = tmp_path / "raw.parquet"
    frame = ingest.run(params.ingest, out)
    assert frame.shape == (7043, 21)
    assert frame["customer_id"].is_unique and "rownames" not in frame.columns
    assert frame["total_charges"].isna().sum() == 11  # the demo's blanks survive ingest
    pd.testing.assert_frame_equal(pd.read_parquet(out), frame)


@pytest.mark.parametrize("suffix", ["csv", "parquet"])
def test_local_file_path_and_file_url(tmp_path, suffix):
    src = tmp_path / f"table.{suffix}"
    TABLE.to_csv(src, index=False) if suffix == "csv" else TABLE.to_parquet(src, index=False)
    for uri in (str(src), src.as_uri()):
        out = tmp_path / "raw.parquet"
        ingest.run(file_params(uri), out)
        pd.testing.assert_frame_equal(pd.read_parquet(out), expected())


@pytest.fixture
def http_dir(tmp_path):
    """A real HTTP server on 127.0.0.1 serving a temp directory."""
    root = tmp_path / "www"
    root.mkdir()
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield root, f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_http_url(http_dir, tmp_path):
    root, base = http_dir
    TABLE.to_csv(root / "churn.csv", index=False)
    out = tmp_path / "raw.parquet"
    ingest.run(file_params(f"{base}/churn.csv"), out)
    pd.testing.assert_frame_equal(pd.read_parquet(out), expected())


def test_http_404_is_a_data_error_and_writes_nothing(http_dir, tmp_path):
    _, base = http_dir
    out = tmp_path / "raw.parquet"
    with pytest.raises(
        DataError, match=r"ingest\.file\.uri: cannot read 'http://127\.0\.0\.1:\d+/absent\.csv'"
    ):
        ingest.run(file_params(f"{base}/absent.csv"), out)
    assert not out.exists() and list(tmp_path.iterdir()) == [tmp_path / "www"]


def test_file_errors(tmp_path):
    with pytest.raises(DataError, match="does not exist"):
        ingest.run(file_params(str(tmp_path / "absent.csv")), tmp_path / "o.parquet")
    with pytest.raises(ConfigError, match="unsupported scheme 's3'"):
        ingest.collect(file_params("s3://bucket/x.csv"))
    with pytest.raises(ConfigError, match="cannot tell the format"):
        ingest.collect(file_params(str(tmp_path / "table.xlsx")))
    (tmp_path / "t.csv").write_text("a,b\n1,2\n")
    with pytest.raises(DataError, match="ingest.rename: source has no column 'rownames'"):
        ingest.collect(file_params(str(tmp_path / "t.csv")))


def test_sqlite_source(tmp_path, monkeypatch):
    url = f"sqlite:///{tmp_path / 'src.db'}"
    engine = sa.create_engine(url)
    TABLE.to_sql("churn", engine, index=False)
    engine.dispose()
    monkeypatch.setenv("TEST_SQL_URL", url)
    out = tmp_path / "raw.parquet"
    ingest.run(sql_params(), out)
    pd.testing.assert_frame_equal(pd.read_parquet(out), expected())


def test_sql_url_env_missing(monkeypatch):
    monkeypatch.delenv("TEST_SQL_URL", raising=False)
    with pytest.raises(ConfigError, match="environment variable TEST_SQL_URL is not set"):
        ingest.collect(sql_params())


def _pg_bin(name: str) -> str:
    found = shutil.which(name) or next(iter(sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"))), None)
    assert found, f"{name} not found: .ci/run installs Debian postgresql"
    return str(found)


@pytest.fixture(scope="module")
def postgres():
    """A real PostgreSQL server on 127.0.0.1 in a temp dir (password auth), stopped at the end."""
    import os
    import tempfile

    # not under pytest's tmp dir: that is private to root and the server runs as `postgres`
    root = Path(tempfile.mkdtemp(prefix="mlops-test-pg-"))
    port = free_port()
    as_pg = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
    if as_pg:
        shutil.chown(root, "postgres")
    pwfile = root / "pw"
    pwfile.write_text("s3cret-pass\n")
    if as_pg:
        shutil.chown(pwfile, "postgres")
    data = root / "data"
    subprocess.run(
        [
            *as_pg,
            _pg_bin("initdb"),
            "-D",
            str(data),
            "-A",
            "scram-sha-256",
            "-U",
            "churn",
            f"--pwfile={pwfile}",
        ],
        check=True,
        capture_output=True,
    )
    ctl = [*as_pg, _pg_bin("pg_ctl"), "-D", str(data)]
    subprocess.run(
        [
            *ctl,
            "-o",
            f"-c listen_addresses=127.0.0.1 -p {port} -k {root}",
            "-l",
            str(root / "log"),
            "-w",
            "start",
        ],
        check=True,
        capture_output=True,
    )
    try:
        yield f"postgresql+psycopg://churn:s3cret-pass@127.0.0.1:{port}/postgres"  # pragma: allowlist secret
    finally:
        subprocess.run([*ctl, "-m", "fast", "-w", "stop"], capture_output=True)
        shutil.rmtree(root, ignore_errors=True)


def test_postgres_source(postgres, tmp_path, monkeypatch, caplog):
    engine = sa.create_engine(postgres)
    TABLE.to_sql("churn", engine, index=False, if_exists="replace")
    engine.dispose()
    monkeypatch.setenv("TEST_SQL_URL", postgres)
    out = tmp_path / "raw.parquet"
    with caplog.at_level(logging.INFO):
        ingest.run(sql_params(), out)
    pd.testing.assert_frame_equal(pd.read_parquet(out), expected())
    assert "s3cret-pass" not in caplog.text and "churn:***@127.0.0.1" in caplog.text


def test_postgres_errors_never_show_the_password(postgres, tmp_path, monkeypatch, caplog):
    monkeypatch.setenv("TEST_SQL_URL", postgres)
    with pytest.raises(DataError) as err:
        ingest.run(sql_params("SELECT * FROM no_such_table"), tmp_path / "raw.parquet")
    assert "no_such_table" in str(err.value) and "s3cret-pass" not in str(err.value)
    monkeypatch.setenv("TEST_SQL_URL", postgres.replace("s3cret-pass", "wrong-pass"))
    with pytest.raises(DataError) as err:
        ingest.run(sql_params(), tmp_path / "raw.parquet")
    assert "wrong-pass" not in str(err.value) and "***" in str(err.value)
    assert "pass" not in caplog.text.replace("OperationalError", "")
    assert not (tmp_path / "raw.parquet").exists()
