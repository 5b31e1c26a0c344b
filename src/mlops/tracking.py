"""tracking: where MLflow runs go. Embedded default: a SQLite store in the workspace, no server.

`MLFLOW_TRACKING_URI` overrides it (a server such as http://127.0.0.1:5000, or another database).
Nothing happens at import; `configure()` is called by the stages that track.
"""

from __future__ import annotations

import os
from pathlib import Path

from mlops.errors import ConfigError

DEFAULT_URI = "sqlite:///mlflow.db"
DEFAULT_ARTIFACTS = "mlartifacts"
# MLflow's database engines (mlflow.store.db.db_types.DATABASE_ENGINES), optionally `+driver`
DATABASE_SCHEMES = ("sqlite", "postgresql", "mysql", "mssql")


# MLflow's REST client retries a server that does not answer 7 times with a backoff factor of 2: about
# four minutes before a CI job learns its registry is down. These bounds (about 7 s of backoff, 30 s per
# request) apply unless the environment sets MLflow's own variables.
RETRY_BOUNDS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "3",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "30",
}


def tracking_uri() -> str:
    """The MLflow tracking URI in effect: MLFLOW_TRACKING_URI or the embedded SQLite store.

    Also bounds MLflow's HTTP retries (RETRY_BOUNDS, unless set), before any request is made.
    """
    for name, value in RETRY_BOUNDS.items():
        os.environ.setdefault(name, value)
    return os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_URI


def _require_sql_store(uri: str) -> None:
    """A database store needs MLflow's SQL backend, which the `mlflow-skinny` client (the pipeline image)
    leaves out: say so, instead of failing deep inside MLflow with a missing module. Other stores (a
    server, a file store) need nothing more."""
    import importlib.util
    import urllib.parse

    if urllib.parse.urlparse(uri).scheme.split("+")[0].lower() not in DATABASE_SCHEMES:
        return
    missing = [m for m in ("sqlalchemy", "alembic") if importlib.util.find_spec(m) is None]
    if missing:
        raise ConfigError(
            f"MLFLOW_TRACKING_URI: {uri} is a database store, and this installation has no "
            f"{' / '.join(missing)} (the MLflow client only, e.g. the pipeline image): set "
            "MLFLOW_TRACKING_URI to a tracking server (http://...)"
        )


def configure(experiment: str) -> str:
    """Point MLflow at the tracking store and select (or create) `experiment`; return its id."""
    import mlflow

    uri = tracking_uri()
    _require_sql_store(uri)
    mlflow.set_tracking_uri(uri)
    found = mlflow.get_experiment_by_name(experiment)
    if found is not None:
        exp_id = found.experiment_id
    else:
        location = None
        if uri.startswith("sqlite:///"):  # embedded store: artifacts live next to the database file
            db = Path(uri.removeprefix("sqlite:///"))
            location = (db.resolve().parent / DEFAULT_ARTIFACTS).as_uri()
        exp_id = mlflow.create_experiment(experiment, artifact_location=location)
    mlflow.set_experiment(experiment_id=exp_id)
    return exp_id
