"""mlops promote / rollback against a real MLflow server and real git repositories (a temporary clone of
this repository with a bare `origin`), including the champion comparison at promotion time (a significant
regression against the env's current model: exit 6, nothing written). Only the forge's merge-request API
is a test double (labelled, in mr_double.py): no GitHub or GitLab server can run here.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import yaml
from registry.conftest import (  # noqa: F401 - degraded: a session fixture used here
    BIN,
    copy_workspace,
    degraded,
    evaluate_args,
    gate_args,
    perturb_weights,
    register_args,
    set_gate,
)

from mlops import records, registry

from .mr_double import running
from conftest import FIXTURE_PARAMS, Workspace, copy_repository

pytestmark = pytest.mark.slow
RECORD = "deploy/envs/staging/model.yaml"
PROD = "deploy/envs/production/model.yaml"


def mlops(repo: Path, *args: str) -> int:
    from mlops import cli

    return cli.main(["--params", str(FIXTURE_PARAMS), *args[:1], "--repo", str(repo), *args[1:]])


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", *args], cwd=repo, capture_output=True, text=True, check=True).stdout


def register(ws: Workspace, name: str, *extra: str) -> str:
    """`mlops register` (as CI runs it) of a workspace's model as `name`; returns the version."""
    out = subprocess.run(
        [str(BIN / "mlops"), "--params", str(ws.params), *register_args(ws, name, *extra)],
        capture_output=True,
        text=True,
        cwd=ws.root,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout)["version"]


def tamper_artifact(basetemp: Path, name: str, version: str) -> None:
    """Overwrite the registered weights in the MLflow server's artifact store (after registration)."""
    source = registry.client().get_model_version(name, version).source  # models:/m-<id>
    model_id = source.rsplit("/", 1)[-1]
    stored = basetemp.glob("mlflow-server*/artifacts/**/model.safetensors")  # pytest adds a *current link
    found = {p.resolve() for p in stored if model_id in p.parts}
    assert found, f"no stored weights for {source} under {basetemp}"
    for path in found:
        data = bytearray(path.read_bytes())
        data[-1] ^= 0xFF  # one bit pattern of the last tensor changes: same size, other sha256
        path.write_bytes(bytes(data))


def pass_gate(ws: Workspace) -> Workspace:
    """Gate a workspace with the latency budgets widened: these tests are about promotion, and a busy
    machine (docker builds beside them) must not fail the gate on timing."""
    set_gate(ws, **{"latency.p95_ms_single": 10000.0, "latency.p95_ms_batch": 10000.0})
    assert ws.mlops(*gate_args(ws)) == 0
    return ws


@pytest.fixture(scope="module")
def gated(pipeline: Workspace, tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    """The session's trained model with a passing gate (read-only)."""
    return pass_gate(copy_workspace(pipeline, tmp_path_factory.mktemp("promote-gated") / "ws"))


@pytest.fixture(scope="module")
def versions(gated: Workspace, mlflow_server: str, tmp_path_factory: pytest.TempPathFactory):
    """A model with two passing versions, a model whose version failed the gate, a tampered model."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", mlflow_server)
        tag = uuid.uuid4().hex[:8]
        name, failed, tampered = f"churn-promote-{tag}", f"churn-failed-{tag}", f"churn-tampered-{tag}"
        v1 = register(gated, name)
        ws2 = copy_workspace(gated, tmp_path_factory.mktemp("promote-v2") / "ws")
        perturb_weights(ws2, 0.01, seed=1)
        assert ws2.mlops(*evaluate_args(ws2)) == 0
        pass_gate(ws2)
        v2 = register(ws2, name)
        ws3 = copy_workspace(gated, tmp_path_factory.mktemp("promote-failed") / "ws")
        set_gate(ws3, **{"metrics.min": {"roc_auc": 0.999}})
        assert ws3.mlops(*gate_args(ws3)) == 4
        vf = register(ws3, failed, "--allow-failed")
        vt = register(gated, tampered)
        tamper_artifact(tmp_path_factory.getbasetemp(), tampered, vt)
        yield {"name": name, "v1": v1, "v2": v2, "failed": (failed, vf), "tampered": (tampered, vt)}


@pytest.fixture(scope="module")
def worse(versions, degraded: Workspace, mlflow_server: str, tmp_path_factory) -> str:  # noqa: F811
    """A third version of the versions' model: clearly worse (1 epoch, 2 hidden units), yet passing a
    gate with loose absolute bounds, so only the champion comparison can stop it. Returns its version."""
    ws = copy_workspace(degraded, tmp_path_factory.mktemp("promote-worse") / "ws")
    set_gate(ws, **{"metrics.min": {"roc_auc": 0.5}, "metrics.max": {}, "slices.min": {}})
    pass_gate(ws)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", mlflow_server)
        return register(ws, versions["name"])


@pytest.fixture
def clone(tmp_path: Path, mlflow_server: str, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A temporary clone of this repository on `main` with a bare `origin` (what CI's checkout has)."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    repo = copy_repository(tmp_path / "repo")
    subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(tmp_path / "origin.git")], check=True)
    git(repo, "remote", "add", "origin", str(tmp_path / "origin.git"))
    git(repo, "push", "-q", "origin", "main")
    return repo


def aliases(name: str) -> dict[str, str]:
    return {k: str(v) for k, v in registry.client().get_registered_model(name).aliases.items()}


def test_promote_commits_the_record_and_moves_the_alias(versions, clone: Path):
    name, v1 = versions["name"], versions["v1"]
    head = git(clone, "rev-parse", "HEAD")
    assert mlops(clone, "promote", "--env", "staging", "--version", v1, "--name", name, "--by", "ci-bot") == 0
    data = yaml.safe_load((clone / RECORD).read_text())
    assert list(data) == [
        "name", "version", "uri", "sha256", "images", "metrics", "git_sha", "promoted_at", "promoted_by",
        "previous",
    ]  # fmt: skip
    assert data["images"] == {}  # registered without --image: the env's values.yaml images run
    mv = registry.client().get_model_version(name, v1)
    assert data["name"] == name and data["version"] == v1 and data["uri"] == f"models:/{name}/{v1}"
    assert data["sha256"] == mv.tags["weights_sha256"]
    assert data["metrics"]["roc_auc"] == pytest.approx(float(mv.tags["metric.roc_auc"]))
    assert data["git_sha"] == mv.tags["git_sha"] and data["promoted_by"] == "ci-bot"
    assert data["previous"] is None and data["promoted_at"].endswith("Z")
    # one commit, on main, touching only the record; the message carries version, metrics, dvc.lock md5
    assert git(clone, "rev-parse", "HEAD^") == head
    assert git(clone, "show", "--name-only", "--format=", "HEAD").split() == [RECORD]
    message = git(clone, "log", "-1", "--format=%B")
    assert message.startswith(f"promote(staging): {name} version {v1}\n")
    assert f"dvc.lock md5: {mv.tags['dvc_lock_md5']}" in message and "roc_auc=" in message
    assert git(clone, "status", "--porcelain", "--", "deploy") == ""
    assert aliases(name)["staging"] == v1
    # the gate and the report read the same record (records.py)
    read = records.read_record(clone / RECORD)
    assert (read.name, read.version, read.sha256) == (name, v1, data["sha256"])

    # promoting the recorded version again changes nothing
    before = git(clone, "rev-parse", "HEAD")
    assert mlops(clone, "promote", "--env", "staging", "--version", v1, "--name", name) == 0
    assert git(clone, "rev-parse", "HEAD") == before


def test_promote_rollback_and_rollback_again(versions, clone: Path, capsys):
    name, v1, v2 = versions["name"], versions["v1"], versions["v2"]
    assert mlops(clone, "promote", "--env", "staging", "--version", v1, "--name", name) == 0
    first = yaml.safe_load((clone / RECORD).read_text())
    assert mlops(clone, "promote", "--env", "staging", "--version", v2, "--name", name, "--push") == 0
    second = yaml.safe_load((clone / RECORD).read_text())
    assert second["version"] == v2
    assert second["previous"] == {"version": v1, "uri": first["uri"], "sha256": first["sha256"]}
    assert aliases(name)["staging"] == v2
    # --push: the tracked branch on origin has the commit
    assert git(clone.parent / "origin.git", "rev-parse", "main") == git(clone, "rev-parse", "HEAD")

    capsys.readouterr()
    assert mlops(clone, "rollback", "--env", "staging", "--json") == 0
    restored = yaml.safe_load((clone / RECORD).read_text())
    for key in ("name", "version", "uri", "sha256", "images", "metrics", "git_sha"):
        assert restored[key] == first[key], key
    assert restored["previous"] == {"version": v2, "uri": second["uri"], "sha256": second["sha256"]}
    assert git(clone, "log", "-1", "--format=%s").strip() == f"rollback(staging): {name} version {v1}"
    assert aliases(name)["staging"] == v1
    # a second rollback undoes the first (like git revert)
    assert mlops(clone, "rollback", "--env", "staging") == 0
    assert yaml.safe_load((clone / RECORD).read_text())["version"] == v2
    assert aliases(name)["staging"] == v2


def assert_refused(clone: Path, capsys, *args: str, reason: str, code: int = 6) -> None:
    head, status = git(clone, "rev-parse", "HEAD"), git(clone, "status", "--porcelain")
    record = (clone / RECORD).read_bytes() if (clone / RECORD).exists() else None
    capsys.readouterr()
    assert mlops(clone, *args) == code
    err = capsys.readouterr().err
    assert reason in err, err
    assert git(clone, "rev-parse", "HEAD") == head and git(clone, "status", "--porcelain") == status
    assert ((clone / RECORD).read_bytes() if (clone / RECORD).exists() else None) == record
    assert not list((clone / RECORD).parent.glob(".model.yaml.*"))  # no temp file left behind


def test_promote_refuses_failed_gate_tampered_and_unknown(versions, clone: Path, capsys):
    failed, vf = versions["failed"]
    assert_refused(
        clone, capsys, "promote", "--env", "staging", "--version", vf, "--name", failed, reason="gate"
    )
    assert "staging" not in aliases(failed)
    tampered, vt = versions["tampered"]
    assert_refused(
        clone, capsys, "promote", "--env", "staging", "--version", vt, "--name", tampered, reason="sha256"
    )
    assert "staging" not in aliases(tampered)
    name = versions["name"]
    assert_refused(
        clone, capsys, "promote", "--env", "staging", "--version", "999", "--name", name, reason="not found"
    )
    assert_refused(
        clone, capsys, "promote", "--env", "qa", "--version", "1", "--name", name, reason="qa", code=2
    )
    # with a record in place, a refusal leaves it as it was
    assert mlops(clone, "promote", "--env", "staging", "--version", versions["v1"], "--name", name) == 0
    assert_refused(
        clone, capsys, "promote", "--env", "staging", "--version", vf, "--name", failed, reason="gate"
    )
    assert_refused(clone, capsys, "rollback", "--env", "staging", reason="no previous version")


@pytest.mark.parametrize("forge", ["github", "gitlab"])
def test_protected_env_gets_a_merge_request(versions, clone: Path, monkeypatch, forge: str):
    name, v1 = versions["name"], versions["v1"]
    origin = clone.parent / "origin.git"
    if "production" in aliases(name):  # the other forge's run merged and synced it
        registry.client().delete_registered_model_alias(name, "production")
    with running("t0ken", origin) as double:
        monkeypatch.setenv("MLOPS_FORGE", forge)
        if forge == "github":
            monkeypatch.setenv("GITHUB_REPOSITORY", "acme/churn")
            monkeypatch.setenv("GITHUB_TOKEN", "t0ken")
            monkeypatch.setenv("GITHUB_API_URL", double.url + "/github")
        else:
            monkeypatch.setenv("CI_PROJECT_ID", "acme/churn")
            monkeypatch.setenv("GITLAB_TOKEN", "t0ken")
            monkeypatch.setenv("CI_API_V4_URL", double.url + "/gitlab/api/v4")
        head = git(clone, "rev-parse", "HEAD")
        assert mlops(clone, "promote", "--env", "production", "--version", v1, "--name", name) == 0
        # main and the working tree are untouched; the branch on origin holds exactly the record change
        assert git(clone, "rev-parse", "HEAD") == head and not (clone / PROD).exists()
        assert git(clone, "status", "--porcelain") == ""
        branch = f"promote/production/{name}-{v1}"
        assert git(origin, "show", "--name-only", "--format=", branch).split() == [PROD]
        data = yaml.safe_load(git(origin, "show", f"{branch}:{PROD}"))
        assert data["version"] == v1 and data["name"] == name
        [mr] = double.merge_requests
        assert (mr["source"], mr["target"]) == (branch, "main")
        assert mr["body"]["title"] == f"promote(production): {name} version {v1}"
        assert "dvc.lock md5:" in mr["body"]["body" if forge == "github" else "description"]
        # the alias moves only when the change reaches main (git is the source of truth)
        assert "production" not in aliases(name)
        # a rerun finds the open merge request instead of opening another
        assert mlops(clone, "promote", "--env", "production", "--version", v1, "--name", name) == 0
        assert len(double.merge_requests) == 1

        # after the merge, the same promotion is a no-op on git that moves the alias
        git(clone, "pull", "-q", "--ff-only", "origin", branch)
        merged = git(clone, "rev-parse", "HEAD")
        assert mlops(clone, "promote", "--env", "production", "--version", v1, "--name", name) == 0
        assert git(clone, "rev-parse", "HEAD") == merged and aliases(name)["production"] == v1


def test_protected_env_without_forge_is_refused_before_pushing(versions, clone: Path, monkeypatch, capsys):
    for var in ("MLOPS_FORGE", "GITHUB_ACTIONS", "GITLAB_CI"):
        monkeypatch.delenv(var, raising=False)
    origin = clone.parent / "origin.git"
    capsys.readouterr()
    args = ("promote", "--env", "production", "--version", versions["v1"], "--name", versions["name"])
    assert mlops(clone, *args) == 2
    assert "merge request" in capsys.readouterr().err
    assert git(origin, "branch", "--list", "promote/*") == ""


def land_record(clone: Path, env: str, name: str, version: str) -> None:
    """Commit a record naming a registered version, as a merged promotion would leave it (the version's
    registry facts, so the comparison fetches and verifies it)."""
    mv = registry.client().get_model_version(name, version)
    path = clone / f"deploy/envs/{env}/model.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "name": name,
                "version": version,
                "uri": f"models:/{name}/{version}",
                "sha256": mv.tags["weights_sha256"],
                "metrics": {},
                "git_sha": mv.tags["git_sha"],
                "promoted_at": "2026-01-01T00:00:00Z",
                "promoted_by": "tests",
                "previous": None,
            },
            sort_keys=False,
        )
    )
    git(clone, "add", "--", str(path))
    git(clone, "commit", "-q", "-m", f"land {env} {name} {version}", "--", str(path))


def test_promote_refuses_a_significant_regression_at_promotion_time(versions, worse, clone, capsys):
    """Staging runs v1; the clearly worse version passed its (loose) gate, but promotion compares it with
    v1 on the same labelled rows now: exit 6 with the metric, the point difference, the interval and the
    bound; no record written, no commit, the alias stays."""
    name, v1 = versions["name"], versions["v1"]
    assert mlops(clone, "promote", "--env", "staging", "--version", v1, "--name", name) == 0
    assert_refused(
        clone,
        capsys,
        "promote", "--env", "staging", "--version", worse, "--name", name,
        reason=f"model {name!r} version {worse} regresses against staging's {name} version {v1}",
    )  # fmt: skip
    assert aliases(name)["staging"] == v1
    capsys.readouterr()
    assert mlops(clone, "promote", "--env", "staging", "--version", worse, "--name", name) == 6
    [err] = [line for line in capsys.readouterr().err.splitlines() if line.startswith("mlops promote: error")]
    found = re.search(
        r"roc_auc (\d\.\d{4}) vs (\d\.\d{4}): Δ ([+-]\d\.\d{4}), 95% CI \[([+-]\d\.\d{4}), "
        r"([+-]\d\.\d{4})\] \(significant\), regression (\d\.\d{4}) > bound 0\.01 "
        r"\(champion\.max_regression\.roc_auc\)",
        err,
    )
    assert found, err
    cand, champ, diff, lo, hi, regression = (float(g) for g in found.groups())
    assert cand < champ and diff < -0.01 and lo <= diff <= hi < 0 and regression == pytest.approx(-diff)


def test_promote_refuses_a_regression_over_a_protected_env_before_any_merge_request(
    versions, worse, clone, monkeypatch, capsys
):
    """Production (protected) runs v1: the worse version is refused before a branch is pushed or a merge
    request opened."""
    name, v1 = versions["name"], versions["v1"]
    land_record(clone, "production", name, v1)
    origin = clone.parent / "origin.git"
    with running("t0ken", origin) as double:
        monkeypatch.setenv("MLOPS_FORGE", "github")
        monkeypatch.setenv("GITHUB_REPOSITORY", "acme/churn")
        monkeypatch.setenv("GITHUB_TOKEN", "t0ken")
        monkeypatch.setenv("GITHUB_API_URL", double.url + "/github")
        head, before = git(clone, "rev-parse", "HEAD"), (clone / PROD).read_bytes()
        capsys.readouterr()
        assert mlops(clone, "promote", "--env", "production", "--version", worse, "--name", name) == 6
        err = capsys.readouterr().err
        assert f"regresses against production's {name} version {v1}" in err and "roc_auc" in err
        assert double.merge_requests == [] and double.requests == []
    assert git(clone, "rev-parse", "HEAD") == head and (clone / PROD).read_bytes() == before
    assert git(origin, "branch", "--list", "promote/*") == "" and git(clone, "status", "--porcelain") == ""


def test_promote_accepts_an_equal_or_better_version(versions, worse, clone, capsys):
    """Within noise of the env's model (v2 over v1) or clearly better (v1 over the worse version): promoted,
    and the commit message carries the comparison."""
    name, v1, v2 = versions["name"], versions["v1"], versions["v2"]
    assert mlops(clone, "promote", "--env", "staging", "--version", v1, "--name", name) == 0
    capsys.readouterr()
    assert mlops(clone, "promote", "--env", "staging", "--version", v2, "--name", name, "--json") == 0
    out = json.loads(capsys.readouterr().out)
    assert out["action"] == "committed" and out["comparison"]["passed"] is True
    assert out["comparison"]["champion"]["version"] == v1
    message = git(clone, "log", "-1", "--format=%B")
    assert "champion comparison: no significant regression on" in message and "roc_auc Δ " in message
    land_record(clone, "staging", name, worse)  # say the worse version had landed there by other means
    assert mlops(clone, "promote", "--env", "staging", "--version", v1, "--name", name) == 0
    assert yaml.safe_load((clone / RECORD).read_text())["version"] == v1


def test_promote_refuses_a_version_without_evaluation_rows(versions, gated, clone, capsys):
    """A version registered without its labelled test rows cannot be compared with the env's model: exit 6
    naming evaluation.parquet (and nothing written); with no record there, there is nothing to compare."""
    name, other = versions["name"], f"{versions['name']}-norows"
    vn = register(gated, other, "--test", str(clone / "no-such-test.parquet"))  # warned, registered
    assert mlops(clone, "promote", "--env", "staging", "--version", versions["v1"], "--name", name) == 0
    args = ("promote", "--env", "staging", "--version", vn, "--name", other)
    assert_refused(clone, capsys, *args, reason=f"version {vn} has no evaluation.parquet")


def test_two_promotions_at_once_make_one_commit_and_both_succeed(versions, clone: Path):
    """Two `mlops promote` of the same version started together (two jobs on one runner): the checkout's
    promotion lock serialises them, the second finds the version recorded and changes nothing."""
    name, v1 = versions["name"], versions["v1"]
    head = git(clone, "rev-parse", "HEAD").strip()
    cmd = [sys.executable, "-m", "mlops", "promote", "--env", "staging", "--version", v1, "--name", name]
    procs = [
        subprocess.Popen(
            cmd, cwd=clone, env=dict(os.environ), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        for _ in range(2)
    ]
    outcomes = [(p.wait(timeout=300), p.stderr.read()) for p in procs]
    assert [code for code, _ in outcomes] == [0, 0], outcomes
    assert git(clone, "rev-list", "--count", f"{head}..HEAD").strip() == "1"
    assert yaml.safe_load((clone / RECORD).read_text())["version"] == v1
    assert any("nothing to change" in err for _, err in outcomes), outcomes
