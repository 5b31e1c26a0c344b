"""Pipeline faults, injected for real: the registry crashes during `mlops register`, `mlops train` is
killed with SIGKILL at seeded random moments, the disk fills during featurize and train, and `dvc push`
meets an unreachable and a full remote. Each test states what happens, checks that nothing is lost or
half-written, and runs the documented recovery (docs/faults.md)."""

from __future__ import annotations

import hashlib
import json
import os
import random
import signal
import subprocess
import time
from pathlib import Path

import pytest
from mlflow import MlflowClient
from registry.conftest import copy_workspace, perturb_weights, register_args

from .injectors import (
    ARTIFACT,
    BIN,
    MlflowServer,
    artifact_state,
    leftovers,
    mlops_env,
    run_mlops,
    small_disk,
    tree_bytes,
    unique,
)
from conftest import Workspace, copy_repository, free_port

pytestmark = pytest.mark.slow
BOUND_S = 60  # the registry's retries are bounded to about 10 s (mlops.tracking); this leaves room for load
SPLITS = ("train.parquet", "valid.parquet", "test.parquet", "preprocess.json")


def registry_env(server: MlflowServer) -> dict[str, str]:
    """The environment of a CI job talking to `server`, with the template's own retry bounds (no
    MLFLOW_HTTP_REQUEST_* set by the caller)."""
    env = mlops_env(MLFLOW_TRACKING_URI=server.url)
    return {k: v for k, v in env.items() if not k.startswith("MLFLOW_HTTP_REQUEST_")}


def versions(server: MlflowServer, name: str) -> list:
    return MlflowClient(server.url, server.url).search_model_versions(f"name = '{name}'")


def test_registry_crash_during_register_is_bounded_and_a_rerun_registers_one_version(
    gated_model: Workspace, registry_server: MlflowServer
):
    """The MLflow server is SIGKILLed while `mlops register` uploads the model: register exits 5 within
    seconds naming the server; the weights are untouched; after the server restarts, the rerun registers
    exactly one version, and a third run finds it (no duplicate)."""
    server = registry_server.ensure_up()
    name = unique("fault-register")
    before = tree_bytes(gated_model.models)
    uploaded = set(server.artifacts.rglob("*")) if server.artifacts.exists() else set()
    proc = subprocess.Popen(
        [str(BIN / "mlops"), "--params", str(gated_model.params), *register_args(gated_model, name)],
        env=registry_env(server),
        cwd=gated_model.root,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    while not (set(server.artifacts.rglob("*")) - uploaded if server.artifacts.exists() else set()):
        assert proc.poll() is None, f"register ended before uploading: {proc.communicate()[1][-2000:]}"
        assert time.monotonic() < deadline, "register uploaded nothing in 120 s"
        time.sleep(0.01)
    server.kill()  # mid-upload: the run exists, the version does not
    killed = time.monotonic()
    _, err = proc.communicate(timeout=300)
    waited = time.monotonic() - killed
    assert proc.returncode == 5, err[-3000:]
    assert waited < BOUND_S, f"register took {waited:.1f} s to give up on a dead registry"
    last = err.strip().splitlines()[-1]
    assert last.startswith("mlops register: error: registry ") and server.url in last, last
    assert "Traceback" not in err
    assert tree_bytes(gated_model.models) == before

    server.start()  # the recovery: the registry is back; rerun the same command
    assert len(versions(server, name)) <= 1
    first = run_mlops(
        "--params",
        str(gated_model.params),
        *register_args(gated_model, name),
        env=registry_env(server),
        cwd=gated_model.root,
    )
    assert first.returncode == 0, first.stderr[-3000:]
    again = run_mlops(
        "--params",
        str(gated_model.params),
        *register_args(gated_model, name),
        env=registry_env(server),
        cwd=gated_model.root,
    )
    assert again.returncode == 0, again.stderr[-3000:]
    assert json.loads(again.stdout)["created"] is False
    (version,) = versions(server, name)
    weights = json.loads((gated_model.models / "model.json").read_text())["weights"]["sha256"]
    assert version.tags["weights_sha256"] == weights
    aliases = MlflowClient(server.url, server.url).get_registered_model(name).aliases
    assert aliases == {"candidate": version.version}
    print(f"\nregister gave up {waited:.1f} s after the registry died (exit 5)")


def _train(ws: Workspace, tracking: str, log: Path) -> subprocess.Popen:
    with open(log, "w") as err:
        return subprocess.Popen(
            [str(BIN / "mlops"), "--params", str(ws.params), *ws.stage_args("train")],
            env=mlops_env(MLFLOW_TRACKING_URI=tracking),
            cwd=ws.root,
            stdout=subprocess.DEVNULL,
            stderr=err,
        )


def _wait_for(proc: subprocess.Popen, ready, log: Path, timeout: float = 300) -> None:
    """Poll every 2 ms until `ready()`; the process must still be running."""
    deadline = time.monotonic() + timeout
    while not ready():
        assert proc.poll() is None, f"train ended before the kill point: {log.read_text()[-2000:]}"
        assert time.monotonic() < deadline, "kill point not reached"
        time.sleep(0.002)


def test_kill_9_during_train_leaves_the_old_or_the_new_artifact_and_a_rerun_writes_the_same_bytes(
    pipeline: Workspace, tmp_path: Path
):
    """`mlops train` is SIGKILLed at seeded random moments: during start-up and training, while it
    writes the artifact, and while it logs to MLflow. models/ is always either the previous complete
    artifact, none (when there was none), or the new complete one (every file matching model.json's
    sha256); a rerun writes the same bytes as the uninterrupted run."""
    ws = copy_workspace(pipeline, tmp_path / "ws")
    old_sha = perturb_weights(ws, 0.05, seed=24)  # a previous, different, complete artifact
    old = tree_bytes(ws.models)
    new = {n: (pipeline.models / n).read_bytes() for n in ARTIFACT}
    new_sha = json.loads(new["model.json"])["weights"]["sha256"]
    assert old_sha != new_sha
    tracking = f"sqlite:///{tmp_path / 'mlflow.db'}"
    rng = random.Random(24)
    models = ws.models

    log = tmp_path / "train.log"

    def training() -> bool:  # run() logs its first line once the imports and the params are done
        return "train: " in log.read_text()

    def temp_file_exists() -> bool:
        return bool(leftovers(models))

    def metadata_replaced() -> bool:
        path = models / "model.json"
        return path.exists() and path.read_bytes() != old["model.json"]

    # (what models/ holds before, the moment to kill at, the states allowed after)
    trials = [
        ("absent", (None, rng.uniform(0.1, 1.0)), {None, new_sha}),  # start-up
        ("old", (training, rng.uniform(0.0, 1.0)), {old_sha, new_sha}),  # the epochs
        ("old", (temp_file_exists, rng.uniform(0.0, 0.2)), {old_sha, new_sha}),  # writing models/
        ("old", (temp_file_exists, rng.uniform(0.0, 0.2)), {old_sha, new_sha}),
        ("old", (metadata_replaced, rng.uniform(0.0, 0.1)), {new_sha}),  # logging to MLflow
    ]
    outcomes = []
    for start, (point, delay), allowed in trials:
        for path in models.iterdir():
            path.unlink()
        if start == "old":
            for fname, data in old.items():
                (models / fname).write_bytes(data)
        proc = _train(ws, tracking, log)
        started = time.monotonic()
        if point is not None:
            _wait_for(proc, point, log)
        time.sleep(delay)
        finished = proc.poll() is not None  # a fast machine may be done: then it must have succeeded
        if finished:
            assert proc.returncode == 0, log.read_text()[-3000:]
        else:
            os.kill(proc.pid, signal.SIGKILL)
            assert proc.wait(30) == -signal.SIGKILL
        state = artifact_state(models)  # raises on a partial or mixed artifact
        assert state in ({new_sha} if finished else allowed), f"{time.monotonic() - started:.2f} s: {state}"
        label = {old_sha: "old", new_sha: "new", None: "none"}[state] + (" (finished)" if finished else "")
        outcomes.append((start, round(time.monotonic() - started, 2), label))
        names = {p.name for p in models.iterdir()}
        assert names - set(ARTIFACT) == set(leftovers(models)), names  # only hidden temp files besides

    done = _train(ws, tracking, log)  # the recovery: run the stage again (dvc repro does)
    assert done.wait(600) == 0, log.read_text()[-3000:]
    assert {n: (models / n).read_bytes() for n in ARTIFACT} == new
    print(f"\nkill -9 during train (start, seconds, models/ after): {outcomes}")


def test_a_full_disk_during_featurize_and_train_names_the_path_and_leaves_nothing_partial(
    pipeline: Workspace, tmp_path: Path
):
    """featurize and train write to a disk that fills up: exit 1 with one line naming the file that
    could not be written; what is there under an output's name is complete (featurize: the bytes of a
    full run; train: the previous artifact, untouched, and no MLflow run); with room, the rerun
    completes with the same bytes as the pipeline's."""
    with small_disk(tmp_path / "disk", 100 * 1024) as disk:
        out = disk.root / "processed"
        args = pipeline.stage_args("featurize", out_dir=out)
        failed = run_mlops("--params", str(pipeline.params), *args, preexec_fn=disk.preexec)
        assert failed.returncode == 1, failed.stderr[-3000:]
        assert failed.last_line.startswith(f"mlops featurize: error: {out}/"), failed.last_line
        assert f"cannot write ({disk.message})" in failed.last_line, failed.last_line
        assert any(f"{out}/{n}:" in failed.last_line for n in SPLITS)
        for fname in os.listdir(out):
            assert fname in SPLITS, f"{fname} left in {out}"
            assert (out / fname).read_bytes() == (pipeline.processed / fname).read_bytes(), fname
        disk.grow(64 * 1024 * 1024)
        again = run_mlops("--params", str(pipeline.params), *args)
        assert again.returncode == 0, again.stderr[-3000:]
        for fname in SPLITS:
            assert (out / fname).read_bytes() == (pipeline.processed / fname).read_bytes(), fname
        print(f"\nfull disk ({disk.kind}) during featurize: {failed.last_line}")

    with small_disk(tmp_path / "disk2", 1024 * 1024) as disk:
        ws = copy_workspace(pipeline, tmp_path / "ws")
        old_sha = perturb_weights(ws, 0.05, seed=7)
        models = disk.root / "models"
        models.mkdir()
        for fname in ARTIFACT:
            (models / fname).write_bytes((ws.models / fname).read_bytes())
        disk.fill()
        if disk.kind == "rlimit":
            disk.size = 10 * 1024  # below the weights' ~19 KB
        tracking = f"sqlite:///{tmp_path / 'mlflow.db'}"
        args = ws.stage_args("train", model_dir=models)
        env = mlops_env(MLFLOW_TRACKING_URI=tracking)
        failed = run_mlops("--params", str(ws.params), *args, env=env, preexec_fn=disk.preexec)
        assert failed.returncode == 1, failed.stderr[-3000:]
        assert failed.last_line.startswith(f"mlops train: error: {models}/model."), failed.last_line
        assert f"cannot write ({disk.message})" in failed.last_line, failed.last_line
        assert artifact_state(models) == old_sha
        assert sorted(os.listdir(models)) == sorted(ARTIFACT)  # no temp file left either
        assert not runs_logged(tracking), "a failed train logged an MLflow run"
        disk.grow(64 * 1024 * 1024)
        again = run_mlops("--params", str(ws.params), *args, env=env)
        assert again.returncode == 0, again.stderr[-3000:]
        for fname in ARTIFACT:
            assert (models / fname).read_bytes() == (pipeline.models / fname).read_bytes(), fname
        assert runs_logged(tracking) == 1
        print(f"full disk ({disk.kind}) during train: {failed.last_line}")


def runs_logged(tracking: str) -> int:
    """MLflow runs in every experiment of a tracking store."""
    client = MlflowClient(tracking)
    ids = [e.experiment_id for e in client.search_experiments()]
    return len(client.search_runs(ids)) if ids else 0


# ---------------------------------------------------------------- DVC remote
def dvc(repo: Path, *args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run([str(BIN / "dvc"), *args], cwd=repo, env=env, capture_output=True, text=True)


def objects(root: Path) -> dict[str, str]:
    """Content-addressed DVC objects under `root` (files/md5/ab/cdef...): relative path -> md5 of content."""
    found = {}
    for path in (root / "files/md5").rglob("*") if (root / "files/md5").exists() else []:
        if path.is_file() and not path.name.startswith("."):
            found[str(path.relative_to(root))] = hashlib.md5(path.read_bytes()).hexdigest()
    return found


def assert_content_addressed(found: dict[str, str]) -> None:
    """Every object hashes to its name: nothing partial under an object's name."""
    for rel, md5 in found.items():
        *_, prefix, rest = Path(rel).parts
        assert prefix + rest.removesuffix(".dir") == md5, f"{rel}: content md5 {md5}"


def test_dvc_push_to_an_unreachable_or_full_remote_fails_clearly_and_keeps_the_cache(tmp_path: Path):
    """In a copy of the repository after `dvc repro validate`: `dvc push` to a remote nobody listens on,
    then to a remote on a full disk (an unwritable one where no tmpfs can be mounted). Each fails (exit
    1) naming the host or the disk's error; the local cache and the workspace are unchanged; nothing
    partial sits under an object name on the remote; with the remote reachable and roomy, the same push
    completes."""
    repo = copy_repository(tmp_path / "repo")
    env = mlops_env(
        PATH=f"{BIN}{os.pathsep}{os.environ['PATH']}",
        MLFLOW_TRACKING_URI=f"sqlite:///{tmp_path / 'mlflow.db'}",
    )
    repro = dvc(repo, "repro", "validate", env=env)
    assert repro.returncode == 0, repro.stderr[-3000:]
    cache = objects(repo / ".dvc/cache")
    assert len(cache) >= 3
    assert_content_addressed(cache)
    push = ("push", "--with-deps", "validate")

    port = free_port()  # nothing listens there
    dvc(repo, "remote", "add", "--local", "-f", "-d", "down", f"http://127.0.0.1:{port}/dvc", env=env)
    started = time.monotonic()
    down = dvc(repo, *push, env=env)
    took = time.monotonic() - started
    assert down.returncode == 1, down.stdout + down.stderr
    assert f"127.0.0.1:{port}" in down.stderr and "failed to push data to the cloud" in down.stderr
    assert took < BOUND_S
    assert objects(repo / ".dvc/cache") == cache

    with small_disk(tmp_path / "disk", 64 * 1024) as disk:
        # a full remote (tmpfs); where no tmpfs can be mounted, an unwritable one: a file where the
        # remote's directory should be (a file-size limit would also stop DVC's own state database)
        remote = disk.root / "remote"
        if disk.kind != "tmpfs":
            remote.write_text("a file where the remote directory should be")
        dvc(repo, "remote", "add", "--local", "-f", "-d", "full", str(remote), env=env)
        full = dvc(repo, *push, env=env)
        if disk.kind == "tmpfs":
            assert full.returncode == 1, full.stdout + full.stderr
            assert disk.message in full.stderr and "failed to push data to the cloud" in full.stderr
        else:
            assert full.returncode != 0 and f"Not a directory: '{remote}/" in full.stderr, full.stderr
        assert objects(repo / ".dvc/cache") == cache
        if remote.is_dir():
            assert_content_addressed(objects(remote))
        status = dvc(repo, "status", "--with-deps", "validate", env=env)  # the workspace matches its lock
        assert status.returncode == 0, status.stdout + status.stderr
        assert status.stdout.strip() == "fingerprint:\n\talways changed", status.stdout

        if disk.kind == "tmpfs":  # the recovery: room on the remote (or the remote's path), the same push
            disk.grow(64 * 1024 * 1024)
        else:
            remote.unlink()
        ok = dvc(repo, *push, env=env)
        assert ok.returncode == 0, ok.stdout + ok.stderr
        stored = objects(remote)
        assert_content_addressed(stored)
        assert set(cache) <= set(stored)
        cloud = dvc(repo, "status", "--cloud", "--with-deps", "validate", env=env)
        assert cloud.returncode == 0 and "are in sync" in cloud.stdout, cloud.stdout + cloud.stderr
    print(f"\ndvc push to an unreachable remote failed in {took:.1f} s")
