"""tracking: where MLflow runs go, and a clear error where the installation cannot write there."""

from __future__ import annotations

import os
import sys

import pytest

from mlops import tracking
from mlops.errors import ConfigError


@pytest.mark.parametrize("missing", ["alembic", "sqlalchemy"])
def test_database_store_without_the_sql_backend_is_a_config_error(monkeypatch, tmp_path, missing):
    """The pipeline image has the MLflow client only (mlflow-skinny): a SQLite store is exit 2 naming
    MLFLOW_TRACKING_URI and the missing module, not a ModuleNotFoundError from inside MLflow."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    monkeypatch.setitem(sys.modules, missing, None)  # as if not installed: find_spec answers None
    with pytest.raises(ConfigError, match=f"MLFLOW_TRACKING_URI: sqlite:///.* no .*{missing}") as e:
        tracking.configure("checked")
    assert e.value.exit_code == 2
    assert not (tmp_path / "mlflow.db").exists()


def test_embedded_store_is_created_next_to_its_artifacts(monkeypatch, tmp_path):
    import mlflow
    from mlflow.tracking._tracking_service import utils

    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path}/mlflow.db")
    # configure() sets MLflow's process-wide URI: restore it for the tests that run after this one
    monkeypatch.setattr(utils, "_tracking_uri", utils._tracking_uri)

    exp_id = tracking.configure("checked")
    assert (tmp_path / "mlflow.db").exists()
    location = mlflow.get_experiment(exp_id).artifact_location
    assert location == (tmp_path / tracking.DEFAULT_ARTIFACTS).as_uri()
    assert tracking.configure("checked") == exp_id  # found, not created twice


def test_a_tracking_server_needs_no_sql_backend(monkeypatch):
    """Only a database URI asks for MLflow's SQL backend: a server URI passes the check without it."""
    monkeypatch.setitem(sys.modules, "alembic", None)
    tracking._require_sql_store("http://127.0.0.1:5000")
    with pytest.raises(ConfigError, match="postgresql"):
        tracking._require_sql_store("postgresql+psycopg://mlflow@127.0.0.1/mlflow")


@pytest.mark.slow
def test_a_registry_that_is_down_fails_in_seconds_naming_it(tmp_path):
    """MLflow's default retries wait about four minutes for a server that does not answer; bounded, a CI
    job learns within seconds (exit 5, naming the server)."""
    import subprocess
    import sys
    import time

    from conftest import free_port

    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_HTTP_REQUEST_")}
    env["MLFLOW_TRACKING_URI"] = url
    started = time.monotonic()
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "mlops",
            "fetch-model",
            "--name",
            "m",
            "--version",
            "1",
            "--dest",
            str(tmp_path / "d"),
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    elapsed = time.monotonic() - started
    assert proc.returncode == 5, proc.stderr[-2000:]
    assert url in proc.stderr.splitlines()[-1]
    assert elapsed < 60, f"{elapsed:.0f} s: the retries are not bounded"


def test_mlflows_own_retry_settings_win(monkeypatch):
    from mlops import tracking

    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "9")
    monkeypatch.delenv("MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR", raising=False)
    tracking.tracking_uri()
    assert os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"] == "9"
    assert (
        os.environ["MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR"]
        == tracking.RETRY_BOUNDS["MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR"]
    )
