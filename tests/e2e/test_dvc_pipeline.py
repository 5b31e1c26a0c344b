"""End to end: `dvc repro` in a temp copy of the repository, no-op rerun, push, a fresh clone that
reproduces from the remote's run-cache without executing any stage (only the source fingerprint runs,
always), a clean `git status` after it, a local file source whose changes DVC sees, and DVC
experiments (`dvc exp run -S`, `exp show`, `params diff`, `plots diff`)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from mlops.params_io import read_yaml

from conftest import copy_repository

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
STAGES = ["fingerprint", "ingest", "validate", "featurize", "train", "evaluate", "gate"]


def sh(*cmd: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    return proc


def executed(proc: subprocess.CompletedProcess) -> list[str]:
    return [line.split("'")[1] for line in proc.stdout.splitlines() if line.startswith("Running stage")]


def use_remote(repo: Path, remote: Path, env) -> None:
    """Point the default remote at a temp dir via config.local (git-ignored), leaving .dvc/config as shipped."""
    sh("dvc", "remote", "add", "--local", "-f", "-d", "testremote", str(remote), cwd=repo, env=env)


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    e = dict(os.environ)
    e["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{e['PATH']}"
    e["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp_path_factory.mktemp('mlflow') / 'mlflow.db'}"
    return e


@pytest.fixture(scope="module")
def copy(tmp_path_factory) -> Path:
    return copy_repository(tmp_path_factory.mktemp("repo") / "repo")


@pytest.fixture(scope="module")
def reproduced(copy, env, tmp_path_factory):
    remote = tmp_path_factory.mktemp("dvc-remote")
    use_remote(copy, remote, env)
    first = sh("dvc", "repro", cwd=copy, env=env)
    return copy, remote, first


def meets_the_gate_bounds(test_metrics: dict, repo: Path) -> None:
    """The test metrics are inside the copy's own params.yaml `gate.metrics` bounds (whatever the table)."""
    bounds = read_yaml(repo / "params.yaml")["gate"]["metrics"]
    for name, low in bounds["min"].items():
        assert test_metrics[name] >= low, (name, test_metrics[name], low)
    for name, high in bounds["max"].items():
        assert test_metrics[name] <= high, (name, test_metrics[name], high)


def test_cold_repro_runs_every_stage_and_meets_the_bar(reproduced):
    repo, _, first = reproduced
    assert executed(first) == STAGES
    meets_the_gate_bounds(json.loads((repo / "reports/metrics.json").read_text())["test"], repo)
    assert not [p for p in (repo / "models").iterdir() if p.suffix in (".pkl", ".pt", ".pth", ".pickle")]


def test_repro_leaves_git_status_clean(reproduced, env):
    """A fresh copy's `dvc repro` changes no tracked file (dvc.lock, .gitignore files) and leaves no
    untracked one: measured latencies go to a git-ignored file, not into a tracked output's hash."""
    repo, _, _ = reproduced
    status = sh("git", "status", "--porcelain", "--untracked-files=all", cwd=repo, env=env).stdout
    if params_edited_stages(repo):  # a lock for other params is rewritten, as it should be
        status = "".join(line for line in status.splitlines(keepends=True) if line != " M dvc.lock\n")
    assert status == "", f"dvc repro changed the clone:\n{status}"
    assert (repo / "reports/gate-timings.json").is_file()


def locks(repo: Path) -> tuple[dict, dict]:
    """(the dvc.lock stages committed in git, those the fresh `dvc repro` wrote)."""
    committed = yaml.safe_load(
        subprocess.run(
            ["git", "show", "HEAD:dvc.lock"], cwd=repo, capture_output=True, text=True, check=True
        ).stdout
    )["stages"]
    return committed, yaml.safe_load((repo / "dvc.lock").read_text())["stages"]


def params_edited_stages(repo: Path) -> set[str]:
    """Stages whose inputs changed because params.yaml changed after dvc.lock was committed (a team that
    has just swapped in its own table and not yet committed the lock `dvc repro` writes): their params
    differ from the lock's, or they read data an edited stage produced."""
    committed, fresh = locks(repo)
    produced_by = {out["path"]: s for s in STAGES for out in fresh.get(s, {}).get("outs", [])}
    edited: set[str] = set()
    for stage in STAGES:  # pipeline order: producers before consumers
        old, new = committed.get(stage, {}), fresh.get(stage, {})
        if old.get("params") != new.get("params") or any(
            produced_by.get(d["path"]) in edited for d in new.get("deps", [])
        ):
            edited.add(stage)
    return edited


def test_committed_dvc_lock_is_reproduced_exactly(reproduced, env):
    """The lock in git matches a from-scratch run: outputs are byte-reproducible across machines, the
    gate's reports included (they hold verdicts; the measured latencies are not in them). Stages that
    params.yaml edits since the lock was committed are expected to differ until the new lock is
    committed; every other stage must match exactly (a code change without its lock is caught)."""
    repo, _, _ = reproduced
    committed, fresh = locks(repo)
    assert set(committed) == set(fresh) == set(STAGES)
    edited = params_edited_stages(repo)
    for stage in (s for s in STAGES if s not in edited):
        for key in ("cmd", "deps", "params", "outs"):
            assert committed[stage].get(key) == fresh[stage].get(key), f"dvc.lock is stale: {stage}.{key}"


def test_dvc_plots_and_metrics_render(reproduced, env):
    """`dvc plots show` renders the binary demo's four plots (the regression ones stay empty);
    `dvc metrics show` reads the metrics file."""
    repo, _, _ = reproduced
    plots = json.loads(sh("dvc", "plots", "show", "--json", cwd=repo, env=env).stdout)
    binary = {"ROC", "Precision-recall", "Confusion matrix", "Calibration"}
    regression = {"Predicted vs actual", "Residuals"}  # declared for regression models: no files here
    assert set(plots["data"]) == binary | regression
    assert all(plots["data"][name] for name in binary), "a plot rendered no data"
    assert not any(plots["data"][name] for name in regression)
    shown = json.loads(sh("dvc", "metrics", "show", "--json", cwd=repo, env=env).stdout)
    data = next(iter(shown.values()))["data"]["reports/metrics.json"]["data"]
    meets_the_gate_bounds(data["test"], repo)


def test_second_repro_executes_only_the_fingerprint(reproduced, env):
    repo, _, _ = reproduced
    again = sh("dvc", "repro", cwd=repo, env=env)
    assert executed(again) == ["fingerprint"]
    assert "Stage 'ingest' didn't change, skipping" in again.stdout


# Edits to what no stage runs: another command's help text and options, the server's, the drift job's
# and the champion comparison's params classes, the promotion code. (file, text replaced, replacement)
OTHER_CODE = [
    (
        "src/mlops/commands/serving.py",
        "serve the model over the Open Inference Protocol",
        "serve models over OIP",
    ),
    (
        "src/mlops/commands/monitor.py",
        '"""Options of `mlops drift`."""',
        '"""Options of `mlops drift`."""\n    p.add_argument("--new-option")',
    ),
    ("src/mlops/params/serve.py", "class ServeParams(", "# edited\nclass ServeParams("),
    ("src/mlops/params/drift.py", "class DriftParams(", "# edited\nclass DriftParams("),
    ("src/mlops/params/champion.py", "class ChampionParams(", "# edited\nclass ChampionParams("),
    ("src/mlops/gitops/promote.py", '"""promote:', '"""promote (edited):'),
    ("src/mlops/config.py", '"""config:', '"""config (edited):'),
]


def test_editing_other_commands_and_their_params_leaves_every_stage_up_to_date(reproduced, env, tmp_path):
    """A stage depends on its own code only: after these edits `dvc status` reports nothing but the
    always-run fingerprint stage (its run-cache, and every stage's, stays valid)."""
    repo, _, _ = reproduced
    copy = tmp_path / "repo"
    shutil.copytree(repo, copy, symlinks=True, ignore=shutil.ignore_patterns(".dvc/cache", ".dvc/tmp"))
    for rel, old, new in OTHER_CODE:
        path = copy / rel
        text = path.read_text()
        assert old in text, (rel, old)
        path.write_text(text.replace(old, new, 1))
    status = json.loads(sh("dvc", "status", "--json", cwd=copy, env=env).stdout)
    assert set(status) <= {"fingerprint"}, status
    assert status.get("fingerprint", ["always changed"]) == ["always changed"], status
    # and the check can fail: an edit to a module a stage runs shows up
    shared = copy / "src/mlops/params/train.py"
    shared.write_text(shared.read_text().replace("class TrainParams(", "# edited\nclass TrainParams(", 1))
    status = json.loads(sh("dvc", "status", "--json", cwd=copy, env=env).stdout)
    assert "train" in status, status


@pytest.mark.parametrize(
    "restore", [["dvc", "pull", "--run-cache"], None], ids=["pull-run-cache", "repro-pull"]
)
def test_fresh_clone_reproduces_from_the_remote_without_running(reproduced, env, tmp_path, restore):
    repo, remote, _ = reproduced
    sh("dvc", "push", "--run-cache", cwd=repo, env=env)
    sh("git", "commit", "-q", "--allow-empty", "-am", "lock", cwd=repo, env=env)
    clone = tmp_path / "clone"
    sh("git", "clone", "-q", str(repo), str(clone), cwd=tmp_path, env=env)
    use_remote(clone, remote, env)
    if restore:
        sh(*restore, cwd=clone, env=env)
        proc = sh("dvc", "repro", cwd=clone, env=env)
    else:
        proc = sh("dvc", "repro", "--pull", cwd=clone, env=env)
    assert executed(proc) == ["fingerprint"]
    for out in ("models/model.safetensors", "reports/metrics.json", "data/processed/test.parquet"):
        assert (clone / out).read_bytes() == (repo / out).read_bytes(), out
    status = json.loads(sh("dvc", "status", "--json", cwd=clone, env=env).stdout)
    assert status == {"fingerprint": ["always changed"]}, status


def test_promotion_and_rollback_leave_dvc_status_clean(reproduced, env, tmp_path):
    """The pipeline depends only on data, code and params: after `mlops promote` commits a staging record,
    a production record lands by its merge request (a TEST DOUBLE of the forge's API), a second staging
    promotion (compared with the first) and `mlops rollback`, `dvc status` still finds every stage up to
    date."""
    import shutil

    from deploy.mr_double import running
    from registry.conftest import perturb_weights, register_args, set_gate

    from conftest import Workspace

    repo, _, _ = reproduced
    origin = tmp_path / "origin.git"
    sh("git", "init", "-q", "--bare", "-b", "main", str(origin), cwd=tmp_path, env=env)
    sh("git", "remote", "add", "origin", str(origin), cwd=repo, env=env)
    sh("git", "push", "-q", "origin", "HEAD:main", cwd=repo, env=env)

    def clean() -> None:
        status = json.loads(sh("dvc", "status", "--json", cwd=repo, env=env).stdout)
        assert status == {"fingerprint": ["always changed"]}, status

    def mlops(*args: str, cwd: Path = repo, **extra: str) -> dict:
        return json.loads(sh("mlops", *args, "--json", cwd=cwd, env={**env, **extra}).stdout)

    # two versions: the reproduced model, and a retrained-like one (its weights perturbed, evaluated and
    # gated outside the repository)
    name = "churn-status"
    clean()
    v1 = mlops("register", "--name", name)["version"]
    ws = Workspace(tmp_path / "ws")
    for rel in ("params.yaml", "data/raw/data.parquet", "data/processed", "models", "reports/metrics.json"):
        src, dest = repo / rel, ws.root / rel
        dest.parent.mkdir(parents=True, exist_ok=True)
        (shutil.copytree if src.is_dir() else shutil.copy2)(src, dest)
    perturb_weights(ws, 0.01, seed=3)
    assert ws.mlops(*ws.stage_args("evaluate")) == 0
    set_gate(ws, **{"latency.p95_ms_single": 10000.0, "latency.p95_ms_batch": 10000.0})
    assert ws.mlops(*ws.stage_args("gate")) == 0
    v2 = mlops("--params", str(ws.params), *register_args(ws, name)[:-1], cwd=tmp_path)["version"]
    assert v1 != v2
    clean()

    promote = ["promote", "--repo", str(repo), "--name", name, "--env"]
    assert mlops(*promote, "staging", "--version", v1)["action"] == "committed"
    clean()
    forge = {"MLOPS_FORGE": "github", "GITHUB_REPOSITORY": "acme/churn", "GITHUB_TOKEN": "t0ken"}
    with running("t0ken", origin) as double:
        made = mlops(*promote, "production", "--version", v1, **forge, GITHUB_API_URL=double.url + "/github")
    assert made["action"] == "merge-request"
    sh("git", "pull", "-q", "--ff-only", "origin", made["branch"], cwd=repo, env=env)  # the merge lands
    assert (repo / "deploy/envs/production/model.yaml").is_file()
    clean()
    second = mlops(*promote, "staging", "--version", v2)
    assert second["action"] == "committed" and second["comparison"]["passed"] is True
    clean()
    assert mlops("rollback", "--repo", str(repo), "--env", "staging")["version"] == v1
    clean()
    log = sh("git", "log", "--format=%s", "-4", cwd=repo, env=env).stdout.splitlines()
    assert log[0].startswith("rollback(staging)") and log[1].startswith("promote(staging)"), log


def test_a_local_file_source_is_seen_by_dvc(env, tmp_path):
    """ingest depends on the source's fingerprint: changing the file reruns ingest, and only then.
    The file holds the table the copy's own params.yaml ingests (whatever it is), written as CSV."""
    repo = copy_repository(tmp_path / "repo")
    sh("dvc", "repro", "ingest", cwd=repo, env=env)
    table = pd.read_parquet(repo / "data/raw/data.parquet")  # the configured source, renamed
    source = repo / "data/external/source.csv"
    source.parent.mkdir(parents=True, exist_ok=True)
    table.to_csv(source, index=False)
    params = read_yaml(repo / "params.yaml")
    params["ingest"].update(
        source="file", file={"uri": "data/external/source.csv", "format": "csv"}, rename={}
    )
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    first = sh("dvc", "repro", "ingest", cwd=repo, env=env)
    assert executed(first) == ["fingerprint", "ingest"]
    assert executed(sh("dvc", "repro", "ingest", cwd=repo, env=env)) == ["fingerprint"]
    fewer = len(table) // 2
    table.head(fewer).to_csv(source, index=False)  # the source shrinks
    assert executed(sh("dvc", "repro", "ingest", cwd=repo, env=env)) == ["fingerprint", "ingest"]
    assert len(pd.read_parquet(repo / "data/raw/data.parquet")) == fewer


def test_dvc_experiments(reproduced, env):
    """`dvc exp run -S` rewrites params.yaml in YAML 1.2 (e.g. `[No, Yes]` unquoted): the stages still read
    it; `exp show`, `params diff` and `plots diff` compare two experiments."""
    repo, _, _ = reproduced
    sh("dvc", "exp", "run", "-n", "lr-high", "-S", "train.lr=0.01", cwd=repo, env=env)
    sh("dvc", "exp", "run", "-n", "lr-low", "-S", "train.lr=0.0005", cwd=repo, env=env)
    shown = json.loads(sh("dvc", "exp", "show", "--json", cwd=repo, env=env).stdout)
    names = {e.get("name") for row in shown for e in row.get("experiments") or []}
    assert {"lr-high", "lr-low"} <= names, names
    diff = json.loads(sh("dvc", "params", "diff", "lr-high", "lr-low", "--json", cwd=repo, env=env).stdout)
    lr = diff["params.yaml"]["train.lr"]
    assert (lr["old"], lr["new"]) == (0.01, 0.0005), lr
    assert set(diff["params.yaml"]) == {"train.lr"}  # DVC and mlops read the same values
    plots = json.loads(sh("dvc", "plots", "diff", "lr-high", "lr-low", "--json", cwd=repo, env=env).stdout)
    assert plots["data"]["ROC"], "dvc plots diff rendered no ROC plot"
    revs = {r for render in plots["data"]["ROC"] for r in render.get("revisions", [])}
    assert {"lr-high", "lr-low"} <= revs, plots["data"]["ROC"][0].keys()
