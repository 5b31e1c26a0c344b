"""The Helm chart charts/training-job (Kubeflow Trainer v2 TrainJob + its TrainingRuntime), rendered for
real (helm-python-sdk) for each ci/ scenario: lint, strict validation (the ServiceAccount with
kubernetes-validate, TrainJob and TrainingRuntime against the Trainer v2.3 CRD schemas found through
MLOPS_CRD_SCHEMAS, see k8s.py), the torchrun command as torchrun and the mlops CLI parse it under the
Trainer's PET_* variables, the restricted security context, the dvc-pull init step (exactly the train
stage's data deps from dvc.yaml; its script run against a real DVC remote) and the GPU scenario.
"""

from __future__ import annotations

import copy
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import helm_python as helm
import pytest
import yaml

from mlops import cli
from mlops.errors import ConfigError
from mlops.gitops import render
from mlops.orchestrate import dag

from .k8s import REPO, by_kind, validate_all

CHART = REPO / "charts" / "training-job"
SCENARIOS = sorted((CHART / "ci").glob("*-values.yaml"))
BIN = Path(sys.executable).parent


def rendered(vals: dict) -> list[dict]:
    return render.render_chart(CHART, vals, release="churn-train", namespace="mlops-train")


def scenario(path: Path) -> tuple[dict, list[dict]]:
    """The values in effect (chart defaults + the scenario) and the rendered objects."""
    vals = render.values_from_files([path])
    return render.values_from_files([CHART / "values.yaml", path]), rendered(vals)


def parts(objects: list[dict]) -> tuple[dict, dict, dict]:
    """The TrainJob, the TrainingRuntime and the runtime's pod spec."""
    (job,) = by_kind(objects, "TrainJob")
    (runtime,) = by_kind(objects, "TrainingRuntime")
    (node_job,) = runtime["spec"]["template"]["spec"]["replicatedJobs"]
    return job, runtime, node_job["template"]["spec"]["template"]["spec"]


def container(pod: dict, name: str) -> dict:
    (found,) = [c for c in pod.get("initContainers", []) + pod["containers"] if c["name"] == name]
    return found


# ---------------------------------------------------------------- lint and validation
def test_scenarios_exist():
    assert {p.name for p in SCENARIOS} >= {"cpu-values.yaml", "gpu-values.yaml"}


@pytest.mark.parametrize("path", SCENARIOS, ids=lambda p: p.stem)
def test_lint_strict(path):
    report = helm.lint(str(CHART), render.values_from_files([path]), strict=True)
    problems = [m for m in report["messages"] if m["severity"] >= 2] + list(report.get("errors") or [])
    assert not problems, problems


@pytest.mark.parametrize("path", SCENARIOS, ids=lambda p: p.stem)
def test_scenario_renders_and_validates(path):
    _, objects = scenario(path)
    assert sorted(o["kind"] for o in objects) == ["ServiceAccount", "TrainJob", "TrainingRuntime"]
    validate_all(objects)


def test_a_violation_is_caught():
    """The CRD validation is not vacuous: unknown fields in the TrainJob or the runtime's pod fail."""
    _, objects = scenario(CHART / "ci" / "cpu-values.yaml")
    broken = copy.deepcopy(objects)
    by_kind(broken, "TrainJob")[0]["spec"]["trainer"]["numProcsPerNode"] = 2
    with pytest.raises(AssertionError, match="numProcsPerNode"):
        validate_all(broken)
    broken = copy.deepcopy(objects)
    container(parts(broken)[2], "dvc-pull")["securityContext"]["readOnlyRootFS"] = True
    with pytest.raises(AssertionError, match="readOnlyRootFS"):
        validate_all(broken)


def test_the_trainjob_references_the_shipped_runtime():
    _, objects = scenario(CHART / "ci" / "cpu-values.yaml")
    job, runtime, _ = parts(objects)
    ref = job["spec"]["runtimeRef"]
    assert ref == {
        "apiGroup": "trainer.kubeflow.org",
        "kind": "TrainingRuntime",
        "name": runtime["metadata"]["name"],
    }
    assert runtime["metadata"]["namespace"] == job["metadata"]["namespace"] == "mlops-train"
    # the Trainer's torch plugin finds the trainer step by this label and its container by the name `node`
    (node_job,) = runtime["spec"]["template"]["spec"]["replicatedJobs"]
    assert (
        node_job["template"]["metadata"]["labels"]["trainer.kubeflow.org/trainjob-ancestor-step"] == "trainer"
    )
    assert [c["name"] for c in parts(objects)[2]["containers"]] == ["node"]


# ---------------------------------------------------------------- torchrun
@pytest.mark.parametrize("path", SCENARIOS, ids=lambda p: p.stem)
def test_torchrun_command(path, monkeypatch):
    """torchrun, given the PET_* variables the Trainer sets, starts numNodes x numProcPerNode processes
    of `mlops ... train` with the train stage's arguments, which the real CLI accepts."""
    import torch.distributed.run as torchrun

    vals, objects = scenario(path)
    job, runtime, pod = parts(objects)
    trainer = job["spec"]["trainer"]
    assert trainer["numNodes"] == vals["trainer"]["numNodes"] == runtime["spec"]["mlPolicy"]["numNodes"]
    assert trainer["numProcPerNode"] == vals["trainer"]["numProcPerNode"]
    assert runtime["spec"]["mlPolicy"]["torch"] == {}  # Trainer v2.3: the torch plugin, no own settings
    node = container(pod, "node")
    assert node["command"] == trainer["command"] and node["image"] == trainer["image"]
    assert trainer["command"][0] == "torchrun"
    assert not [e for e in trainer["env"] if e["name"].startswith("PET_")]  # reserved for the Trainer

    master = f"{job['metadata']['name']}-node-0-0.{job['metadata']['name']}"
    pet = {
        "PET_NNODES": str(trainer["numNodes"]),
        "PET_NPROC_PER_NODE": str(trainer["numProcPerNode"]),
        "PET_NODE_RANK": "1",
        "PET_MASTER_ADDR": master,
        "PET_MASTER_PORT": "29400",
    }
    for name, value in pet.items():
        monkeypatch.setenv(name, value)
    args = torchrun.parse_args(trainer["command"][1:])
    assert (args.nnodes, args.nproc_per_node, args.node_rank) == (
        pet["PET_NNODES"],
        pet["PET_NPROC_PER_NODE"],
        1,
    )
    assert (args.master_addr, args.master_port) == (master, 29400)
    assert args.module and args.training_script == "mlops"

    parsed = cli.parse_args(args.training_script_args)
    stage = dag.load(REPO / "dvc.yaml")["train"]
    assert parsed.command == "train" and parsed.params == Path("params.yaml")
    assert args.training_script_args[-len(stage.cmd.split()) + 1 :] == stage.cmd.split()[1:]
    assert node["workingDir"] == vals["volumes"]["workspaceDir"]


# ---------------------------------------------------------------- policy
@pytest.mark.parametrize("path", SCENARIOS, ids=lambda p: p.stem)
def test_restricted_pod_security(path):
    _, objects = scenario(path)
    job, _, pod = parts(objects)
    assert pod["automountServiceAccountToken"] is False
    assert by_kind(objects, "ServiceAccount")[0]["automountServiceAccountToken"] is False
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] > 0
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert not {"hostNetwork", "hostPID", "hostIPC"} & set(pod)
    volumes = {v["name"]: v for v in pod["volumes"]}
    workspace = container(pod, "node")["workingDir"]
    for c in pod["initContainers"] + pod["containers"]:
        sc = c["securityContext"]
        assert sc["allowPrivilegeEscalation"] is False, c["name"]
        assert sc["capabilities"] == {"drop": ["ALL"]}, c["name"]
        assert sc["readOnlyRootFilesystem"] is True, c["name"]
        assert sc["runAsNonRoot"] is True and not sc.get("privileged"), c["name"]
        assert {"/tmp", workspace} <= {m["mountPath"] for m in c["volumeMounts"]}, c["name"]
        for m in c["volumeMounts"]:
            assert "emptyDir" in volumes[m["name"]], m  # writes only to emptyDirs
        assert {"requests", "limits"} <= set(c["resources"]), c["name"]


def test_latest_tag_and_unknown_values_are_refused():
    base = render.values_from_files([CHART / "ci" / "cpu-values.yaml"])
    with pytest.raises(ConfigError, match="image/tag"):
        rendered(render.merge_values(base, {"image": {"tag": "latest"}}))
    with pytest.raises(ConfigError, match="numProcsPerNode"):
        rendered(render.merge_values(base, {"trainer": {"numProcsPerNode": 2}}))
    with pytest.raises(ConfigError, match="trainer/env/0/name"):
        rendered(render.merge_values(base, {"trainer": {"env": [{"name": "PET_NNODES", "value": "3"}]}}))


def test_tracking_secret_is_required():
    with pytest.raises(ConfigError, match="tracking.secretName"):
        rendered({})
    job, _, pod = parts(rendered({"tracking": {"secretName": "mlflow"}}))
    assert container(pod, "node")["envFrom"] == [{"secretRef": {"name": "mlflow"}}]
    assert "MLFLOW_TRACKING_URI" not in json.dumps(job)  # never inline: only from the Secret


# ---------------------------------------------------------------- the train stage from dvc.yaml
def test_stage_file_matches_dvc_yaml():
    """files/train-stage.json is what `make training-job-stage` writes from dvc.yaml now (not stale)."""
    fresh = dag.load(REPO / "dvc.yaml").record("train")
    assert json.loads((CHART / "files" / "train-stage.json").read_text()) == fresh, (
        "charts/training-job/files/train-stage.json is stale: run `make training-job-stage`"
    )


@pytest.mark.parametrize("path", SCENARIOS, ids=lambda p: p.stem)
def test_dvc_pull_fetches_exactly_the_train_stage_data_deps(path):
    vals, objects = scenario(path)
    pod = parts(objects)[2]
    assert [c["name"] for c in pod["initContainers"]] == ["dvc-pull"]
    init = container(pod, "dvc-pull")
    assert init["command"][:2] == ["/bin/sh", "-ec"] and init["command"][3] == "dvc-pull"
    pipeline = dag.load(REPO / "dvc.yaml")
    train = pipeline["train"]
    produced = {o for s in pipeline.stages.values() if s.name != "train" for o in s.outs}
    assert (
        init["command"][4:] == [d for d in train.deps if d in produced] == list(pipeline.data_deps("train"))
    )
    assert not set(init["command"][4:]) & set(train.outs)
    env = {e["name"]: e.get("value") for e in init["env"]}
    assert env["DVC_REMOTE_URL"] == vals["dvc"]["remoteUrl"]
    assert env["MLOPS_WORKSPACE"] == container(pod, "node")["workingDir"]
    assert json.loads(env["MLOPS_PARAMS"]) == vals.get("params", {})
    assert init["envFrom"] == [{"secretRef": {"name": vals["dvc"]["secretName"]}}]


def test_gpu_scenario_resources_and_scheduling():
    vals, objects = scenario(CHART / "ci" / "gpu-values.yaml")
    job, _, pod = parts(objects)
    per_node = job["spec"]["trainer"]["resourcesPerNode"]
    gpus = per_node["limits"]["nvidia.com/gpu"]
    assert gpus == per_node["requests"]["nvidia.com/gpu"] == job["spec"]["trainer"]["numProcPerNode"] == 4
    assert container(pod, "node")["resources"] == per_node
    assert "nvidia.com/gpu" not in json.dumps(container(pod, "dvc-pull")["resources"])
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"} in pod["tolerations"]
    shm = {v["name"]: v for v in pod["volumes"]}["dshm"]["emptyDir"]
    assert shm == {"medium": "Memory", "sizeLimit": "16Gi"}
    env = {e["name"]: e.get("value") for e in container(pod, "dvc-pull")["env"]}
    assert json.loads(env["MLOPS_PARAMS"]) == {"train.device": "cuda"}
    _, cpu_objects = scenario(CHART / "ci" / "cpu-values.yaml")
    assert "nvidia.com/gpu" not in json.dumps(cpu_objects)


# ---------------------------------------------------------------- the init script, run for real
def dvc(cwd: Path, *args: str) -> None:
    subprocess.run([str(BIN / "dvc"), *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture()
def project(tmp_path, monkeypatch):
    """A DVC project (no git) with a `prep` stage's outputs pushed to a local remote, like the image's."""
    monkeypatch.setenv("DVC_NO_ANALYTICS", "1")
    root = tmp_path / "image-app"
    root.mkdir()
    dvc(root, "init", "--no-scm", "-q")
    dvc(root, "remote", "add", "-d", "store", str(tmp_path / "remote"))
    (root / "params.yaml").write_text("train:\n  device: cpu   # cpu | cuda | auto\n  epochs: 3\n")
    stages = {
        "prep": {
            "cmd": "mkdir -p data && echo train > data/train.txt && echo other > data/other.txt",
            "outs": ["data/train.txt", "data/other.txt"],
        }
    }
    (root / "dvc.yaml").write_text(yaml.safe_dump({"stages": stages}))
    dvc(root, "repro", "-q")
    dvc(root, "push", "-q")
    shutil.rmtree(root / ".dvc" / "cache")
    shutil.rmtree(root / "data")
    return root


def run_init(pod: dict, targets: list[str]) -> subprocess.CompletedProcess:
    init = container(pod, "dvc-pull")
    env = {
        **os.environ,
        **{e["name"]: e["value"] for e in init["env"]},
        "PATH": f"{BIN}:{os.environ['PATH']}",
    }
    env["DVC_SITE_CACHE_DIR"] = str(Path(env["MLOPS_WORKSPACE"]) / ".site-cache")
    env["HOME"] = env["MLOPS_WORKSPACE"]
    return subprocess.run([*init["command"][:4], *targets], env=env, capture_output=True, text=True)


@pytest.mark.slow
def test_init_script_pulls_the_targets_and_sets_params(project, tmp_path):
    """The rendered script copies the project, pulls only the given targets, and sets params.yaml keys
    keeping its comments; an unknown params key fails naming it."""
    ws = tmp_path / "workspace"
    ws.mkdir()
    vals = {
        "tracking": {"secretName": "mlflow"},  # pragma: allowlist secret
        "image": {"projectDir": str(project)},
        "volumes": {"workspaceDir": str(ws)},
        "params": {"train.device": "cuda"},
    }
    pod = parts(rendered(vals))[2]
    result = run_init(pod, ["data/train.txt"])
    assert result.returncode == 0, result.stderr
    assert (ws / "data" / "train.txt").read_text() == "train\n"
    assert not (ws / "data" / "other.txt").exists()  # exactly the targets
    params = (ws / "params.yaml").read_text()
    assert "device: cuda" in params and "# cpu | cuda | auto" in params and "epochs: 3" in params
    assert (project / "params.yaml").read_text().count("device: cpu") == 1  # the image's copy untouched

    ws2 = tmp_path / "workspace2"
    ws2.mkdir()
    pod = parts(
        rendered({**vals, "volumes": {"workspaceDir": str(ws2)}, "params": {"train.devise": "cuda"}})
    )[2]
    result = run_init(pod, ["data/train.txt"])
    assert result.returncode != 0 and "no key 'train.devise'" in result.stderr
