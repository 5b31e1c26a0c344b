"""The pipeline image (Dockerfile.pipeline), built offline by the private dockerd of
tests/serve/test_docker.py (debootstrapped base, host-built wheelhouse) and run as the cluster would run it:

- the training chart's node pod, rendered for 1 node x 2 processes and translated into `docker run`s by
  mlops.gitops.pod (the kubelet's view: uid 10001, read-only root, capabilities dropped, the emptyDirs as
  host directories, host network): the `dvc-pull` init container's script against a DVC remote (a mounted
  directory), then the trainer's torchrun command with the PET_* variables the Trainer's torch plugin
  sets and the tracking Secret pointing at a real MLflow server on 127.0.0.1. It must train with world
  size 2 and track the run;
- one compiled Kubeflow Pipelines step (the train stage's `mlops kfp-step ...`, as kfp_spec emits it) with
  KFP's placeholders filled as a KFP backend fills them: it pulls featurize's outputs, trains, tracks and
  pushes the model files to the remote.

The image holds the repository's DVC project at /app, so its dvc.lock names the data the init container
and the step pull: the remote is filled the way CI's `dvc repro` + `dvc push` fill it, from the
repository's params.yaml and dvc.lock (tests/e2e/test_training_job.py's helper), and must hold exactly
those hashes (else the committed dvc.lock is stale). So, unlike the template tests, this one runs on the
shipped params.yaml: it is the image's. Image facts are asserted too: a CPU-only torch, no
compiler, non-root, every third-party module a stage imports, /app equal to the repository's files; the
image size goes to $MLOPS_DOCKER_CACHE/last-image.json (`pipeline_image_bytes`).
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import mlflow
import pytest
import yaml
from deploy.test_training_chart import container, parts, rendered
from serve.test_docker import CACHE, _record, _sh, build_image, docker  # noqa: F401 - docker is a fixture
from test_gitlab_ci_image import _ci_wheelhouse
from test_training_job import featurized_project, torch_plugin_env

from mlops.gitops.pod import Docker, Pod
from mlops.orchestrate import dag, kfp_spec, step

from conftest import REPO, free_port

pytestmark = [pytest.mark.slow, pytest.mark.e2e]
DOCKERFILE = "Dockerfile.pipeline"
PIPELINE_REQUIREMENTS = re.search(
    r'ARG PIPELINE_REQUIREMENTS="([^"]+)"', (REPO / DOCKERFILE).read_text()
).group(1)
IMAGE = "mlops-pipeline:test"
# the DVC project the image holds at /app (besides src/), as the repository has it
PROJECT = ["dvc.yaml", "dvc.lock", "params.yaml", ".dvcignore", ".dvc/config", "deploy/envs/production"]
# optional engines the image leaves out on purpose (Dockerfile.pipeline's header)
NOT_IN_IMAGE = {"pyspark"}


def test_hadolint_clean():
    hadolint = Path(sys.executable).parent / "hadolint"
    result = subprocess.run([str(hadolint), str(REPO / DOCKERFILE)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def project_files() -> dict[str, str]:
    """What the image's /app must hold: {path: md5} of the repository's project files and src/."""
    paths = []
    for name in [*PROJECT, "src"]:
        root = REPO / name
        found = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
        paths += [p for p in found if "__pycache__" not in p.parts and not p.suffix == ".pyc"]
    paths = [p for p in paths if not any(part.endswith(".egg-info") for part in p.parts)]
    return {str(p.relative_to(REPO)): hashlib.md5(p.read_bytes()).hexdigest() for p in paths}


def stage_imports() -> set[str]:
    """Top-level third-party modules imported (anywhere, lazily too) by the code of every DVC stage."""
    stages = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
    sources = {d for s in stages.values() for d in s.get("deps", []) if d.endswith(".py")}
    sources.add("src/mlops/orchestrate/step.py")  # `mlops kfp-step` around each stage
    names: set[str] = set()
    for source in sources:
        for node in ast.walk(ast.parse((REPO / source).read_text())):
            if isinstance(node, ast.Import):
                names.update(a.name.split(".")[0] for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    names.add("dvc")  # step.py runs `python -m dvc`
    return {n for n in names if n not in sys.stdlib_module_names and n not in {"mlops", "__future__"}}


def pipeline_wheelhouse() -> Path:
    """The image's requirements (pins from pyproject.toml, mlflow as mlflow-skinny) picked from the CI
    image's wheelhouse (test_gitlab_ci_image.py: every pinned dependency as a wheel, cached). Not the
    serving test's `_wheelhouse`: its `pip download --only-binary` cannot get a dependency of DVC that
    is published only as a source distribution (hydra's antlr4 runtime)."""
    import tomllib

    source = _ci_wheelhouse()
    names = set(PIPELINE_REQUIREMENTS.split())
    deps = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    reqs = [
        re.sub(r"^mlflow==", "mlflow-skinny==", d)
        for d in deps
        if re.split(r"[=<>\[; ]", d)[0].lower() in names
    ]
    assert len(reqs) == len(names), f"not pinned in pyproject.toml: {names}"
    key = hashlib.sha256(f"{source.name}|{reqs}".encode()).hexdigest()[:16]
    target = CACHE / f"pipeline-wheelhouse-{key}"
    if not target.exists():
        tmp = Path(tempfile.mkdtemp(prefix="pipeline-wheelhouse-", dir=CACHE))
        _sh(
            sys.executable, "-m", "pip", "download", "--quiet", "--no-index", "--only-binary=:all:",
            "--find-links", str(source), "--dest", str(tmp / "w"), *reqs, "setuptools>=68", "wheel",
            timeout=1200,
        )  # fmt: skip
        os.replace(tmp / "w", target)
        shutil.rmtree(tmp)
    return target


@pytest.fixture(scope="module")
def pipeline_image(docker, tmp_path_factory) -> str:  # noqa: F811
    """Dockerfile.pipeline built offline from the repository's files (plus its DVC project files)."""
    ctx = tmp_path_factory.mktemp("pipeline-context")
    for name in PROJECT:
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, ctx / name)
        else:
            (ctx / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(REPO / name, ctx / name)
    build_image(docker, ctx, DOCKERFILE, IMAGE, pipeline_wheelhouse())
    size = int(_sh("docker", "image", "inspect", "-f", "{{.Size}}", IMAGE, env=docker))
    print(f"\nimage {IMAGE}: {size / 1e6:.0f} MB")
    _record(pipeline_image=IMAGE, pipeline_image_bytes=size)
    return IMAGE


FACTS = r"""
import hashlib, importlib.metadata as md, importlib.util as u, json, os, pathlib, re, shutil, sys
import torch
site = pathlib.Path(torch.__file__).parents[1]
app = pathlib.Path("/app")
print(json.dumps({
    "uid": os.getuid(),
    "cuda": torch.version.cuda,
    "cuda_dists": sorted(d.metadata["Name"] for d in md.distributions()
                         if d.metadata["Name"].lower().startswith(("nvidia", "triton"))),
    "cuda_libs": sorted(p.name for p in site.rglob("*.so*") if re.search("cuda|cudnn|nccl|cublas", p.name)),
    "compilers": [c for c in ("gcc", "cc", "c++", "clang", "make") if shutil.which(c)],
    "git": shutil.which("git"),
    "app": {str(p.relative_to(app)): hashlib.md5(p.read_bytes()).hexdigest()
            for p in app.rglob("*") if p.is_file()},
    "missing": sorted(n for n in sys.argv[1:] if u.find_spec(n) is None),
}))
"""


def test_image_facts(docker, pipeline_image):  # noqa: F811
    """CPU-only torch, no compiler or git, a non-root user, every module the stages import, and /app
    holding exactly the repository's project (the chart pulls and KFP runs what its dvc.yaml says)."""
    user = _sh("docker", "image", "inspect", "-f", "{{.Config.User}}", pipeline_image, env=docker).strip()
    assert user == "10001:10001"
    wanted = sorted(stage_imports())
    assert {"torch", "dvc", "mlflow", "pandera", "onnxruntime"} <= set(wanted)  # the scan is not vacuous
    out = _sh(
        "docker", "run", "--rm", "--network", "host", "--read-only", "--entrypoint", "python3",
        pipeline_image, "-c", FACTS, *wanted, env=docker,
    )  # fmt: skip
    facts = json.loads(out.strip().splitlines()[-1])
    assert facts["uid"] == 10001
    assert (facts["cuda"], facts["cuda_dists"], facts["cuda_libs"]) == (None, [], [])
    assert facts["compilers"] == [] and facts["git"] is None
    assert set(facts["missing"]) == NOT_IN_IMAGE, f"stage imports not installed: {facts['missing']}"
    assert facts["app"] == project_files()
    size = int(_sh("docker", "image", "inspect", "-f", "{{.Size}}", pipeline_image, env=docker))
    assert size < 2.5e9, f"{size / 1e9:.2f} GB: a CUDA build of torch or a test suite came in?"


@pytest.fixture(scope="module")
def featurized(tmp_path_factory) -> tuple[Path, Path, dict]:
    """(project, remote, dvc.lock): featurize's outputs in a local DVC remote, made from the repository's
    params.yaml and dvc.lock, whose hashes they must match (the image pulls by its dvc.lock)."""
    root = Path(tempfile.mkdtemp(prefix="mlops-pipeline-remote-"))  # pytest's dirs are private to root
    app, remote = root / "app", root / "remote"
    lock = featurized_project(app, remote, params=REPO / "params.yaml", lock=REPO / "dvc.lock")
    committed = yaml.safe_load((REPO / "dvc.lock").read_text())["stages"]["featurize"]["outs"]
    assert lock["stages"]["featurize"]["outs"] == committed, (
        "dvc repro featurize gives other outputs than dvc.lock records: reproduce and commit dvc.lock"
    )
    yield app, remote, lock
    shutil.rmtree(root, ignore_errors=True)


def run_container(docker_env: dict, cmd: list[str], image: str, mounts: dict[Path, str]) -> str:
    """`docker run` a command line of mlops.gitops.pod (`docker` args, no `docker`) with extra mounts."""
    at = cmd.index(image)
    mount_args = [a for src, dst in mounts.items() for a in ("-v", f"{src}:{dst}")]
    out = Docker(docker_env)(*cmd[:at], *mount_args, *cmd[at:], timeout=900, check=False)
    assert out.returncode == 0, f"docker {' '.join(cmd)}\n{out.stdout[-3000:]}\n{out.stderr[-4000:]}"
    return out.stdout + out.stderr


def tracked_run(tracking_uri: str, meta: dict, since_ms: int) -> mlflow.entities.Run:
    """The one MLflow run that logged these weights since `since_ms` (the session's server holds other
    tests' runs, and training is deterministic: an earlier test can log the same weights)."""
    client = mlflow.tracking.MlflowClient(tracking_uri)
    experiment = client.get_experiment_by_name(
        yaml.safe_load((REPO / "params.yaml").read_text())["train"]["experiment"]
    )
    assert experiment is not None, "no MLflow experiment: the run was not tracked"
    sha = meta["weights"]["sha256"]
    runs = client.search_runs(
        [experiment.experiment_id],
        f"tags.weights_sha256 = '{sha}' and attributes.start_time >= {since_ms}",
    )
    assert len(runs) == 1, f"{len(runs)} runs with weights {sha[:8]}"
    return runs[0]


def test_the_training_chart_node_pod_runs_in_the_image(docker, pipeline_image, featurized, mlflow_server):  # noqa: F811
    _, remote, _ = featurized
    repository, tag = pipeline_image.split(":")
    vals = {
        "image": {"repository": repository, "tag": tag},
        "tracking": {"secretName": "mlflow"},  # pragma: allowlist secret
        "trainer": {"numNodes": 1, "numProcPerNode": 2},
        "params": {"train.epochs": 3},
        "dvc": {"remoteUrl": "/remote"},
        "logJson": False,
    }
    job, _, spec = parts(rendered(vals))
    init, node = container(spec, "dvc-pull"), container(spec, "node")
    trainer = job["spec"]["trainer"]
    assert node["image"] == init["image"] == trainer["image"] == pipeline_image
    assert node["securityContext"]["readOnlyRootFilesystem"] and node["workingDir"] == "/workspace"
    # the Trainer's torch plugin adds the PET_* variables to the node container
    plugin = torch_plugin_env(trainer, free_port())
    node = {**node, "env": [*node["env"], *({"name": k, "value": v} for k, v in plugin.items())]}

    user = _sh("docker", "image", "inspect", "-f", "{{.Config.User}}", pipeline_image, env=docker).strip()
    name = f"pipeline-image-{os.getpid()}"
    with tempfile.TemporaryDirectory(prefix="mlops-node-pod-") as tmp:
        pod = Pod(
            {"spec": spec},
            name,
            "mlops-train",
            Path(tmp),
            {"mlflow": {"MLFLOW_TRACKING_URI": mlflow_server}},
            {},
        )
        try:
            run_container(
                docker, pod.docker_run(init, user, detach=False), pipeline_image, {remote: "/remote:ro"}
            )
            ws = pod.volumes["workspace"]
            pulled = sorted(str(p.relative_to(ws)) for p in (ws / "data").rglob("*") if p.is_file())
            assert pulled == sorted(init["command"][4:])  # exactly the train stage's data deps
            assert "epochs: 3" in (ws / "params.yaml").read_text()  # the chart's params applied

            since = int(time.time() * 1000)
            logs = run_container(docker, pod.docker_run(node, user, detach=False), pipeline_image, {})
            meta = json.loads((ws / "models" / "model.json").read_text())
        finally:
            for c in ("dvc-pull", "node"):
                subprocess.run(["docker", "rm", "-f", f"{name}-{c}"], env=docker, capture_output=True)
    assert {k: meta["training"][k] for k in ("world_size", "backend", "device")} == {
        "world_size": 2,
        "backend": "gloo",
        "device": "cpu",
    }, logs[-3000:]
    run = tracked_run(mlflow_server, meta, since)  # rank 0 alone tracks: one run
    assert run.data.params["train.epochs"] == "3"
    artifacts = {
        f.path for f in mlflow.tracking.MlflowClient(mlflow_server).list_artifacts(run.info.run_id, "model")
    }
    assert "model/model.json" in artifacts


def test_a_compiled_kfp_step_runs_in_the_image(docker, pipeline_image, featurized, mlflow_server, tmp_path):  # noqa: F811
    """The train step as the compiled pipeline runs it: featurize's lock entry in (a KFP artifact), the
    data through the DVC remote, the model files pushed there and the step's lock entry out."""
    app, featurized_remote, lock = featurized
    remote = tmp_path / "remote"  # a copy the step (uid 10001, as the image says) pushes into
    shutil.copytree(featurized_remote, remote)
    subprocess.run(["chown", "-R", "10001:10001", str(remote)], check=True)
    spec = kfp_spec.pipeline_spec(dag.load(REPO / "dvc.yaml"), image=pipeline_image)
    (component,) = [s["component"] for s in spec["steps"] if s["stage"] == "train"]
    command = component["implementation"]["container"]["command"]

    io = Path(tempfile.mkdtemp(prefix="mlops-kfp-io-"))
    try:
        (io / "in").mkdir()
        (io / "out").mkdir()
        io.chmod(0o755)
        (io / "out").chmod(0o777)
        _lock_file(io / "in" / "lock_featurize", "featurize", lock["stages"]["featurize"]).chmod(0o644)
        filled = {  # what a KFP backend puts in the placeholders: artifact paths and parameter values
            "lock": "/kfp/out/lock",
            "lock_featurize": "/kfp/in/lock_featurize",
            "dvc_remote_url": "/remote",
            "mlflow_tracking_uri": mlflow_server,
        }
        argv = [a if isinstance(a, str) else filled[next(iter(a.values()))] for a in command]
        assert argv[:4] == ["mlops", "kfp-step", "--stage", "train"] and "--pull" in argv
        cmd = ["run", "--rm", "--network", "host", "--read-only", "--tmpfs", "/tmp", "--entrypoint", argv[0]]
        cmd += [pipeline_image, *argv[1:]]
        since = int(time.time() * 1000)
        run_container(docker, cmd, pipeline_image, {remote: "/remote", io: "/kfp"})

        entry = json.loads((io / "out" / "lock").read_text())
    finally:
        shutil.rmtree(io, ignore_errors=True)
    assert entry["stage"] == "train"
    assert sorted(o["path"] for o in entry["lock"]["outs"]) == sorted(
        dag.load(REPO / "dvc.yaml")["train"].outs
    )

    # the outputs are in the remote: a fresh workspace pulls them by the step's lock entry
    ws = tmp_path / "check"
    step.prepare(app, ws, str(remote))
    step.merge_locks(ws, [_lock_file(tmp_path / "lock-train.json", "train", entry["lock"])])
    step.dvc(ws, "pull", "train")
    meta = json.loads((ws / "models" / "model.json").read_text())
    assert meta["training"]["world_size"] == 1
    run = tracked_run(mlflow_server, meta, since)
    assert run.data.tags["weights_sha256"] == meta["weights"]["sha256"]


def _lock_file(path: Path, stage: str, body: dict) -> Path:
    """A step's lock artifact (what `mlops kfp-step --lock-out` writes) at `path`."""
    path.write_text(json.dumps({"stage": stage, "lock": body}))
    return path
