"""dvc.yaml → an Airflow DAG (`mlops airflow-dag`): one task per stage with the DVC DAG's dependencies, each
stage's params hash and the git commit in its tags and docs; run for real by Apache Airflow 3
(apache-airflow==3.3.2 in its cached tool virtualenv, tests/orchestrate/airflow-requirements.txt) with
`airflow dags test` and SQLite metadata on a copy of the repository: the outputs equal the committed
dvc.lock's, and a second run executes nothing new. The kubernetes mode's pods, as the real
KubernetesPodOperator (cncf.kubernetes provider 10.25.0) builds them, validate strictly and are restricted.
"""

from __future__ import annotations

import ast
import json
import os
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from deploy.k8s import KUBE_VERSIONS, validate_core
from serve.oip_clients.toolenv import tool_python

from mlops import cli
from mlops.errors import ConfigError
from mlops.files import json_digest
from mlops.orchestrate import airflow_dag, airflow_pod, dag

from conftest import copy_repository

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
AIRFLOW_REQUIREMENTS = Path(__file__).with_name("airflow-requirements.txt")
COMMIT = "0123456789abcdef0123456789abcdef01234567"  # pragma: allowlist secret


def literals(source: str) -> dict:
    """The module-level constants (literals) of a generated DAG file."""
    out = {}
    for node in ast.parse(source).body:
        if isinstance(node, ast.Assign) and len(node.targets) == 1 and isinstance(node.targets[0], ast.Name):
            try:
                out[node.targets[0].id] = ast.literal_eval(node.value)
            except ValueError:
                pass
    return out


def generate(tmp_path: Path, *args: str, root: Path = REPO) -> Path:
    out = tmp_path / "dags" / "dag.py"
    assert cli.main(["airflow-dag", "--dvc-yaml", str(root / "dvc.yaml"), "--out", str(out), *args]) == 0
    return out


def assert_restricted(pod: dict) -> None:
    """The restricted Pod Security Standard, as tests/deploy/test_training_chart.py checks the chart."""
    spec = pod["spec"]
    assert spec["automountServiceAccountToken"] is False
    assert spec["securityContext"]["runAsNonRoot"] is True and spec["securityContext"]["runAsUser"] > 0
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert not [k for k in ("hostNetwork", "hostPID", "hostIPC") if spec.get(k)]
    volumes = {v["name"]: v for v in spec["volumes"]}
    for c in spec.get("initContainers", []) + spec["containers"]:
        sc = c["securityContext"]
        assert sc["allowPrivilegeEscalation"] is False, c["name"]
        assert sc["capabilities"] == {"drop": ["ALL"]}, c["name"]
        assert sc["readOnlyRootFilesystem"] is True, c["name"]
        assert sc["runAsNonRoot"] is True and not sc.get("privileged"), c["name"]
        for m in c.get("volumeMounts", []):
            assert "emptyDir" in volumes[m["name"]], m  # writes only to emptyDirs
    base = next(c for c in spec["containers"] if c["name"] == airflow_pod.BASE_CONTAINER)
    assert {"/tmp", airflow_pod.WORKSPACE} <= {m["mountPath"] for m in base["volumeMounts"]}
    assert {"requests", "limits"} <= set(base["resources"])
    # the DVC remote and MLflow settings only from the Secret
    assert base["envFrom"] == [{"secretRef": {"name": airflow_pod.SECRET_NAME}}]
    assert not [e for e in base["env"] if e["name"].startswith(("MLFLOW_", "DVC_REMOTE", "AWS_"))]


# ---------------------------------------------------------------- the generated file (no Airflow needed)
def test_one_task_per_stage_with_the_dvc_dag_params_hashes_and_commit(tmp_path):
    pipeline = dag.load(REPO / "dvc.yaml")
    source = airflow_dag.dag_source(pipeline, root=REPO, commit=COMMIT)
    consts = literals(source)
    assert list(consts["STAGES"]) == list(pipeline.stages)
    for name, stage in consts["STAGES"].items():
        assert stage["upstream"] == list(pipeline.upstream(name))
        declared = dag.params_values(pipeline[name], REPO)
        assert declared and stage["params_hash"] == json_digest(declared)
        assert f"`{stage['params_hash']}`" in consts["DOC_MD"]
    assert consts["GIT_COMMIT"] == COMMIT and f"git:{COMMIT[:12]}" in consts["TAGS"]
    assert COMMIT in consts["DOC_MD"] and consts["SCHEDULE"] is None
    # the train stage's hash covers exactly the sections it declares in dvc.yaml
    assert set(dag.params_values(pipeline["train"], REPO)) == {"schema", "featurize", "train"}
    assert "import mlops" not in source and "from mlops" not in source  # self-contained
    assert "dvc repro --single-item" in source and f"Param({str(REPO)!r}" in source


def test_the_command_records_the_checkout_commit(tmp_path):
    out = generate(tmp_path, "--dag-id", "churn")
    consts = literals(out.read_text())
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=REPO, capture_output=True, text=True).stdout
    assert consts["GIT_COMMIT"].startswith(head.strip())
    assert "dag_id='churn'" in out.read_text()


def test_params_of_another_file_and_a_missing_key(tmp_path):
    (tmp_path / "params.yaml").write_text("a: {b: 1}\n")
    (tmp_path / "other.yaml").write_text("x: 2\n")
    pipeline = dag.parse(
        {"stages": {"s": {"cmd": "true", "params": ["a.b", {"other.yaml": ["x"]}], "outs": ["o"]}}}
    )
    assert dag.params_values(pipeline["s"], tmp_path) == {"a.b": 1, "other.yaml:x": 2}
    missing = dag.parse({"stages": {"s": {"cmd": "true", "params": ["a.c"]}}})
    with pytest.raises(ConfigError, match="no key 'a.c'"):
        dag.params_values(missing["s"], tmp_path)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"mode": "cloud"}, "--mode"),
        ({"dag_id": "has space"}, "--dag-id"),
        ({"schedule": "weekly"}, "--schedule"),
        ({"mode": "kubernetes", "schedule": "0 3 * * 1"}, "git checkout"),
        ({"mode": "kubernetes", "image": "a b"}, "--image"),
    ],
)
def test_bad_options_are_config_errors(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        airflow_dag.dag_source(dag.load(REPO / "dvc.yaml"), root=REPO, commit=COMMIT, **kwargs)


def test_each_pod_is_valid_restricted_and_runs_its_stage_through_kfp_step():
    pipeline = dag.load(REPO / "dvc.yaml")
    for name, stage in pipeline.stages.items():
        pod = airflow_pod.pod_spec(pipeline, name, image="registry.example/mlops-pipeline:1.2.3")
        pod["metadata"]["namespace"] = "ml"
        for version in KUBE_VERSIONS:
            validate_core(pod, version)
        assert_restricted(pod)
        (base,) = pod["spec"]["containers"]
        assert base["image"] == "registry.example/mlops-pipeline:1.2.3"
        env = {e["name"]: e["value"] for e in base["env"]}
        assert env["MLOPS_UPSTREAM_LOCKS"].split() == [
            airflow_pod.lock_env(u) for u in pipeline.upstream(name)
        ]
        assert env["MLOPS_LOCK_OUT"] == airflow_pod.XCOM_FILE
        # what the container's shell executes parses as `mlops kfp-step` for this stage
        script, argv0, *args = base["command"][2:] + base["args"]
        assert argv0 == "kfp-step" and "exec mlops kfp-step" in script
        words = shlex.split(
            "kfp-step --stage s --project /app --workspace /w --lock-out /x --remote-url '' "
            "--upstream-lock /tmp/l.json " + shlex.join(args)
        )
        parsed = cli.parse_args(words)
        assert parsed.pull == list(pipeline.data_deps(name)) and parsed.cmd == shlex.split(stage.cmd)
        assert "sh" in base["command"][0] and subprocess.run(["sh", "-n", "-c", script]).returncode == 0


@pytest.mark.slow
def test_the_pods_commands_move_data_through_the_remote_and_locks_through_xcom(tmp_path):
    """Each pod's container command, run here in DAG order (what the pods would run, without a cluster):
    the upstream dvc.lock entries arrive as `MLOPS_LOCK_<STAGE>` (Airflow's `ti.xcom_pull | tojson` of
    the upstream's XCom file), the data through the DVC remote; d gets b's and c's results, which got a's."""
    from orchestrate.test_kfp import toy_project

    project, remote = tmp_path / "app", tmp_path / "remote"
    toy_project(project, tmp_path / "unused-default-remote")
    pipeline = dag.load(project / "dvc.yaml")
    xcom: dict[str, Path] = {}
    for name in pipeline.stages:
        pod = airflow_pod.pod_spec(pipeline, name, image="mlops-pipeline:test", project_dir=str(project))
        (base,) = pod["spec"]["containers"]
        scratch = tmp_path / "pods" / name
        (scratch / "tmp").mkdir(parents=True)
        env = {e["name"]: e["value"] for e in base["env"]}
        env.update(  # the pod's mounts, here; the Secret's DVC_REMOTE_URL
            HOME=str(scratch / "tmp"),
            TMPDIR=str(scratch / "tmp"),
            DVC_SITE_CACHE_DIR=str(scratch / "tmp" / "dvc-site"),
            MLOPS_WORKSPACE=str(scratch / "workspace"),
            MLOPS_LOCK_OUT=str(scratch / "xcom" / "return.json"),
            DVC_REMOTE_URL=str(remote),
            PATH=f"{BIN}:{os.environ['PATH']}",
        )
        for up in pipeline.upstream(name):
            env[airflow_pod.lock_env(up)] = json.dumps(json.loads(xcom[up].read_text()))
        proc = subprocess.run(base["command"] + base["args"], env=env, capture_output=True, text=True)
        assert proc.returncode == 0, f"{name}: {proc.stderr[-3000:]}"
        xcom[name] = scratch / "xcom" / "return.json"
        assert json.loads(xcom[name].read_text())["stage"] == name
    assert (tmp_path / "pods/d/workspace/out/d.txt").read_text() == (
        "d saw b.txt,c.txt | b saw a.txt | a saw | c saw a.txt | a saw\n"
    )
    assert not (tmp_path / "unused-default-remote").exists() and not (project / "out").exists()


# ---------------------------------------------------------------- Airflow 3, for real
@pytest.fixture(scope="module")
def airflow_python() -> Path:
    """apache-airflow==3.3.2's virtualenv (tests/serve/oip_clients/toolenv.py; built once, cached)."""
    return tool_python(AIRFLOW_REQUIREMENTS, "airflow")


def airflow_env(home: Path) -> dict[str, str]:
    """Airflow with its metadata in SQLite under `home`, DAGs from home/dags, no examples."""
    env = {
        **os.environ,
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(home / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
        "DVC_NO_ANALYTICS": "1",
    }
    env.pop("PYTHONPATH", None)
    return env


def airflow(python: Path, env: dict[str, str], *args: str, timeout: int = 900) -> str:
    proc = subprocess.run(
        [str(python), "-m", "airflow", *args], env=env, capture_output=True, text=True, timeout=timeout
    )
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"airflow {' '.join(args)} exited {proc.returncode}:\n{out[-6000:]}"
    return out


# Runs in the Airflow virtualenv: the DAG as Airflow loads it, each pod as the operator builds it
INSPECT = """import json, runpy, sys
from kubernetes.client import ApiClient
dag = runpy.run_path(sys.argv[1])["dag"]
out = {"dag_id": dag.dag_id, "schedule": str(dag.schedule), "timetable": type(dag.timetable).__name__,
       "tags": sorted(dag.tags), "tasks": {}}
for task in dag.tasks:
    entry = {"upstream": sorted(task.upstream_task_ids), "operator": type(task).__name__}
    if hasattr(task, "build_pod_request_obj"):
        entry["pod"] = ApiClient().sanitize_for_serialization(task.build_pod_request_obj(dry_run=True))
    out["tasks"][task.task_id] = entry
open(sys.argv[2], "w").write(json.dumps(out))
"""


def inspect(python: Path, dag_file: Path, tmp_path: Path) -> dict:
    script, out = (
        tmp_path / "inspect_dag.py",
        tmp_path / "inspect_dag.json",
    )  # not inspect.py: the stdlib module
    script.write_text(INSPECT)
    home = tmp_path / "inspect-home"
    home.mkdir(exist_ok=True)
    proc = subprocess.run(
        [str(python), str(script), str(dag_file), str(out)],
        env=airflow_env(home),
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return json.loads(out.read_text())


def executed(log: str) -> list[str]:
    return [
        line.split("Running stage '")[1].split("'")[0]
        for line in log.splitlines()
        if "Running stage '" in line
    ]


def outs(lock: dict) -> dict[str, list[tuple[str, str | None]]]:
    return {
        name: [(o["path"], o.get("md5")) for o in stage.get("outs", [])]
        for name, stage in lock["stages"].items()
    }


@pytest.mark.slow
@pytest.mark.e2e
def test_airflow_dags_test_runs_the_pipeline_and_reproduces_the_lock(airflow_python, tmp_path):
    repo = copy_repository(tmp_path / "repo")
    home = tmp_path / "airflow"
    (home / "dags").mkdir(parents=True)
    dag_file = generate(home, "--dag-id", "mlops_local", "--bin-dir", str(BIN), root=repo)
    env = airflow_env(home)
    airflow(airflow_python, env, "db", "migrate")
    committed = yaml.safe_load(
        subprocess.run(
            ["git", "show", "HEAD:dvc.lock"], cwd=repo, capture_output=True, text=True, check=True
        ).stdout
    )

    first = airflow(airflow_python, env, "dags", "test", "mlops_local")
    pipeline = dag.load(repo / "dvc.yaml")
    assert executed(first) == list(pipeline.stages)  # each task ran its stage, in DAG order
    assert "state=success" in first
    lock = yaml.safe_load((repo / "dvc.lock").read_text())
    assert outs(lock) == outs(committed)  # the same bytes as the committed dvc.lock says

    second = airflow(airflow_python, env, "dags", "test", "mlops_local")
    # fingerprint runs on every repro (always_changed) and finds the same source; nothing else runs
    assert executed(second) == ["fingerprint"]
    skipped = {n for n in pipeline.stages if f"Stage '{n}' didn't change, skipping" in second}
    assert skipped == set(pipeline.stages) - {"fingerprint"}
    assert outs(yaml.safe_load((repo / "dvc.lock").read_text())) == outs(committed)
    status = subprocess.run(
        [str(BIN / "dvc"), "status", "--json"], cwd=repo, env=env, capture_output=True, text=True, check=True
    )
    assert json.loads(status.stdout) == {"fingerprint": ["always changed"]}

    loaded = inspect(airflow_python, dag_file, tmp_path)
    edges = {(up, t) for t, task in loaded["tasks"].items() for up in task["upstream"]}
    assert edges == pipeline.edges() and set(loaded["tasks"]) == set(pipeline.stages)
    assert {"mlops", "dvc", "local"} <= set(loaded["tags"])


@pytest.mark.slow
def test_the_scheduled_dag_ends_with_the_retrain_merge_request(airflow_python, tmp_path):
    dag_file = generate(tmp_path, "--schedule", "0 3 * * 1", "--dag-id", "mlops_retrain")
    loaded = inspect(airflow_python, dag_file, tmp_path)
    pipeline = dag.load(REPO / "dvc.yaml")
    retrain = loaded["tasks"].pop(airflow_dag.RETRAIN_TASK)
    assert set(retrain["upstream"]) == set(pipeline.stages) and "0 3 * * 1" in loaded["schedule"]
    assert loaded["schedule"] == "0 3 * * 1" and "Cron" in loaded["timetable"]
    assert "mlops retrain-mr --reason" in dag_file.read_text() and "retrain" in loaded["tags"]
    assert not [t for t, task in loaded["tasks"].items() if airflow_dag.RETRAIN_TASK in task["upstream"]]


@pytest.mark.slow
def test_kubernetes_mode_pods_as_the_operator_builds_them(airflow_python, tmp_path):
    dag_file = generate(tmp_path, "--mode", "kubernetes", "--image", "registry.example/mlops-pipeline:1.2.3")
    loaded = inspect(airflow_python, dag_file, tmp_path)
    pipeline = dag.load(REPO / "dvc.yaml")
    assert {(up, t) for t, task in loaded["tasks"].items() for up in task["upstream"]} == pipeline.edges()
    for name, task in loaded["tasks"].items():
        assert task["operator"] == "KubernetesPodOperator"
        pod = task["pod"]
        assert pod["metadata"]["namespace"] == "{{ params.namespace }}"  # rendered at run time
        pod["metadata"]["namespace"] = "ml"
        for version in KUBE_VERSIONS:
            validate_core(pod, version)
        assert_restricted(pod)  # the XCom sidecar included
        names = [c["name"] for c in pod["spec"]["containers"]]
        assert names == [airflow_pod.BASE_CONTAINER, "airflow-xcom-sidecar"]
        base = pod["spec"]["containers"][0]
        env = {e["name"]: e.get("value") for e in base["env"]}
        for up in pipeline.upstream(name):  # each upstream lock entry from its XCom
            assert env[airflow_pod.lock_env(up)] == f"{{{{ ti.xcom_pull(task_ids='{up}') | tojson }}}}"
        assert "/airflow/xcom" in {m["mountPath"] for m in base["volumeMounts"]}
