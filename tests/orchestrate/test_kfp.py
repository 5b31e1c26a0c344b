"""dvc.yaml → Kubeflow Pipelines: the step graph is the DVC DAG (compared with `dvc dag --dot` on the
repository's dvc.yaml and on one with a stage added), each step runs its stage's cmd through
`mlops kfp-step`, the real KFP compiler (kfp==2.17.3 in its cached tool virtualenv) compiles it to IR
YAML with the same tasks and dependencies, and that IR, executed step by step in separate workspaces
against a local DVC remote, moves every stage's data through the remote.
"""

from __future__ import annotations

import copy
import json
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from serve.oip_clients.toolenv import tool_python

from mlops import cli
from mlops.errors import ConfigError
from mlops.orchestrate import dag, kfp_spec, step

REPO = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent
KFP_REQUIREMENTS = Path(__file__).with_name("kfp-requirements.txt")


def dvc_dag_edges(dvc_yaml: dict, tmp_path: Path) -> set[tuple[str, str]]:
    """The edges `dvc dag --dot` prints for a dvc.yaml (in a scratch DVC project without git)."""
    root = tmp_path / "dvc-dag"
    (root / ".dvc").mkdir(parents=True)
    (root / ".dvc" / "config").write_text("[core]\n    no_scm = true\n")  # what `dvc init --no-scm` writes
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    (root / "dvc.yaml").write_text(yaml.safe_dump(dvc_yaml, sort_keys=False))
    dot = subprocess.run(
        [str(BIN / "dvc"), "dag", "--dot"], cwd=root, check=True, env=env, capture_output=True, text=True
    ).stdout
    return set(re.findall(r'"([^"]+)" -> "([^"]+)"', dot))


def repo_dvc_yaml() -> dict:
    return yaml.safe_load((REPO / "dvc.yaml").read_text())


def with_added_stage(doc: dict) -> dict:
    """The repository's dvc.yaml plus a `summary` stage reading the gate's and evaluate's outputs."""
    doc = copy.deepcopy(doc)
    doc["stages"]["summary"] = {
        "cmd": "mlops summary --gate reports/gate.json --metrics reports/metrics.json --out reports/summary.md",
        "deps": ["reports/gate.json", "reports/metrics.json", "src/mlops/cli.py"],
        "outs": ["reports/summary.md"],
    }
    return doc


# ---------------------------------------------------------------- the graph (no kfp needed)
def test_graph_equals_the_dvc_dag(tmp_path):
    pipeline = dag.load(REPO / "dvc.yaml")
    assert pipeline.edges() == dvc_dag_edges(repo_dvc_yaml(), tmp_path)
    assert set(pipeline.stages) == set(repo_dvc_yaml()["stages"])


def test_an_added_stage_is_a_step(tmp_path):
    doc = with_added_stage(repo_dvc_yaml())
    pipeline = dag.parse(doc)
    assert pipeline.edges() == dvc_dag_edges(doc, tmp_path)
    spec = kfp_spec.pipeline_spec(pipeline)
    steps = {s["stage"]: s for s in spec["steps"]}
    assert steps["summary"]["upstream"] == ["evaluate", "gate"]
    assert [s["stage"] for s in spec["steps"]][-1] == "summary"  # topological: after its upstream


def test_each_step_runs_its_stage_through_kfp_step():
    pipeline = dag.load(REPO / "dvc.yaml")
    spec = kfp_spec.pipeline_spec(pipeline, image="registry.example/mlops-pipeline:1.2.3")
    assert [s["stage"] for s in spec["steps"]] == list(pipeline.stages)
    order = [s["stage"] for s in spec["steps"]]
    for s in spec["steps"]:
        stage, comp = pipeline[s["stage"]], s["component"]
        container = comp["implementation"]["container"]
        assert container["image"] == "registry.example/mlops-pipeline:1.2.3"
        command = container["command"]
        assert command[:4] == ["mlops", "kfp-step", "--stage", stage.name]
        assert command[command.index("--") + 1 :] == shlex.split(stage.cmd)
        assert command[command.index("--") + 1] == "mlops"  # `mlops <stage>` in the image
        pulls = [command[i + 1] for i, a in enumerate(command) if a == "--pull"]
        assert pulls == list(pipeline.data_deps(stage.name))
        lock_inputs = {i["name"] for i in comp["inputs"] if i["name"].startswith("lock_")}
        assert lock_inputs == {f"lock_{u}" for u in pipeline.upstream(stage.name)}
        assert all(order.index(u) < order.index(stage.name) for u in s["upstream"])

        # the real CLI accepts the step's command (KFP placeholders replaced by paths)
        argv = [re.sub(r"\{.*\}", "x", a) if isinstance(a, str) else "/tmp/x" for a in command[1:]]
        args = cli.parse_args(argv)
        assert (args.stage, args.cmd, args.pull) == (stage.name, shlex.split(stage.cmd), pulls)


def test_data_deps_are_the_outputs_of_other_stages():
    pipeline = dag.load(REPO / "dvc.yaml")
    assert pipeline.data_deps("fingerprint") == ()
    assert pipeline.data_deps("ingest") == ("data/raw/source.json",)
    for name, stage in pipeline.stages.items():
        produced = {o for s in pipeline.stages.values() if s.name != name for o in s.outs}
        assert set(pipeline.data_deps(name)) == set(stage.deps) & produced
        assert not [d for d in pipeline.data_deps(name) if d.startswith("src/")]


def test_overlapping_paths_are_dependencies():
    doc = {
        "stages": {
            "a": {"cmd": "make-dir", "outs": ["data/dir"]},
            "b": {"cmd": "read-one", "deps": ["data/dir/one.csv"], "outs": ["b.txt"]},
            "c": {"cmd": "read-parent", "deps": ["data"], "outs": ["c.txt"]},
        }
    }
    pipeline = dag.parse(doc)
    assert pipeline.edges() == {("a", "b"), ("a", "c")}
    assert pipeline.data_deps("b") == ("data/dir/one.csv",) and pipeline.data_deps("c") == ("data/dir",)


@pytest.mark.parametrize(
    ("stage", "message"),
    [
        ({"foreach": [1, 2], "do": {"cmd": "x"}}, "foreach"),
        ({"cmd": "x ${item}"}, "templating"),
        ({"cmd": "x", "wdir": "sub"}, "wdir"),
        ({"deps": ["a"]}, "cmd is missing"),
    ],
)
def test_unsupported_stages_are_refused(stage, message):
    with pytest.raises(ConfigError, match=message):
        dag.parse({"stages": {"bad": stage}})


def test_a_cycle_and_an_unknown_stage_are_errors():
    doc = {
        "stages": {
            "a": {"cmd": "x", "deps": ["b.txt"], "outs": ["a.txt"]},
            "b": {"cmd": "y", "deps": ["a.txt"], "outs": ["b.txt"]},
        }
    }
    with pytest.raises(ConfigError, match="cycle"):
        dag.parse(doc)
    with pytest.raises(ConfigError, match="no stage 'nope'"):
        dag.load(REPO / "dvc.yaml")["nope"]


def test_a_step_refuses_a_cmd_the_image_does_not_declare(tmp_path):
    """The image's dvc.yaml and the compiled pipeline drifted apart: exit 2 before anything runs."""
    with pytest.raises(ConfigError, match="recompile the pipeline"):
        step.run("train", ["mlops", "train", "--epochs", "9"], project=REPO, lock_out=tmp_path / "lock.json")
    assert not (tmp_path / "lock.json").exists()


def test_compile_without_kfp_names_the_fix(tmp_path, capsys):
    code = cli.main(["kfp-compile", "--out", str(tmp_path / "p.yaml"), "--kfp-python", sys.executable])
    assert code == 2 and "make kfp-pipeline" in capsys.readouterr().err


# ---------------------------------------------------------------- the real KFP compiler
@pytest.fixture(scope="module")
def kfp_python() -> Path:
    """kfp==2.17.3's virtualenv (tests/serve/oip_clients/toolenv.py; built once, cached)."""
    return tool_python(KFP_REQUIREMENTS, "kfp-compiler")


def ir_graph(ir: dict) -> tuple[dict[str, str], set[tuple[str, str]]]:
    """Task key → stage (its display name) and the (upstream, downstream) stage pairs of KFP IR."""
    tasks = ir["root"]["dag"]["tasks"]
    stage_of = {key: task["taskInfo"]["name"] for key, task in tasks.items()}
    edges = {
        (stage_of[up], stage_of[key]) for key, task in tasks.items() for up in task.get("dependentTasks", [])
    }
    return stage_of, edges


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["repo", "added-stage"])
def test_kfp_compiles_the_dvc_dag(variant, kfp_python, tmp_path):
    doc = repo_dvc_yaml() if variant == "repo" else with_added_stage(repo_dvc_yaml())
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    out = tmp_path / "pipeline.yaml"
    code = cli.main(
        [
            "kfp-compile",
            "--dvc-yaml",
            str(tmp_path / "dvc.yaml"),
            "--out",
            str(out),
            "--kfp-python",
            str(kfp_python),
        ]
    )
    assert code == 0
    ir = yaml.safe_load(out.read_text())
    assert ir["sdkVersion"] == "kfp-2.17.3" and ir["pipelineInfo"]["name"] == "mlops-dvc-pipeline"
    stage_of, edges = ir_graph(ir)
    assert sorted(stage_of.values()) == sorted(doc["stages"])
    assert edges == dvc_dag_edges(doc, tmp_path)
    for key, task in ir["root"]["dag"]["tasks"].items():
        executor = ir["components"][task["componentRef"]["name"]]["executorLabel"]
        command = ir["deploymentSpec"]["executors"][executor]["container"]["command"]
        assert command[command.index("--") + 1 :] == shlex.split(dag.parse(doc)[stage_of[key]].cmd)
        assert task["cachingOptions"] == {}  # KFP caching off: DVC decides what changed
    assert set(ir["root"]["inputDefinitions"]["parameters"]) == set(kfp_spec.PARAMETERS)


# ---------------------------------------------------------------- the compiled IR, executed
TOOL = """import os, sys
out, label, *inputs = sys.argv[1:]
present = sorted(os.listdir("out")) if os.path.isdir("out") else []
body = [label + " saw " + ",".join(present)] + [open(p).read().strip() for p in inputs]
os.makedirs(os.path.dirname(out), exist_ok=True)
open(out, "w").write(" | ".join(body) + "\\n")
"""


def toy_project(root: Path, remote: Path) -> dict:
    """A DVC project (no git, as in the image) with a diamond a -> (b, c) -> d of plain commands."""
    root.mkdir()
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    subprocess.run([str(BIN / "dvc"), "init", "--no-scm", "-q"], cwd=root, check=True, env=env)
    subprocess.run(
        [str(BIN / "dvc"), "remote", "add", "-d", "image-default", str(remote)], cwd=root, check=True, env=env
    )
    (root / "tool.py").write_text(TOOL)

    def stage(name: str, *inputs: str) -> dict:
        cmd = shlex.join(["python3", "tool.py", f"out/{name}.txt", name, *inputs])
        return {"cmd": cmd, "deps": ["tool.py", *inputs], "outs": [f"out/{name}.txt"]}

    doc = {
        "stages": {
            "a": stage("a"),
            "b": stage("b", "out/a.txt"),
            "c": stage("c", "out/a.txt"),
            "d": stage("d", "out/b.txt", "out/c.txt"),
        }
    }
    (root / "dvc.yaml").write_text(yaml.safe_dump(doc, sort_keys=False))
    return doc


def run_ir(ir: dict, parameters: dict[str, str], scratch: Path) -> None:
    """Execute KFP IR as a KFP backend would, one process per task in dependency order: placeholders
    replaced by files (artifacts) and values (parameters); no state shared but those files."""
    tasks = ir["root"]["dag"]["tasks"]
    done: dict[str, dict[str, Path]] = {}
    while len(done) < len(tasks):
        key = next(
            k for k, t in tasks.items() if k not in done and set(t.get("dependentTasks", [])) <= set(done)
        )
        task = tasks[key]
        component = ir["components"][task["componentRef"]["name"]]
        container = ir["deploymentSpec"]["executors"][component["executorLabel"]]["container"]
        outputs = {name: scratch / key / name for name in component["outputDefinitions"]["artifacts"]}
        artifacts = {
            name: done[src["taskOutputArtifact"]["producerTask"]][
                src["taskOutputArtifact"]["outputArtifactKey"]
            ]
            for name, src in task["inputs"].get("artifacts", {}).items()
        }
        params = {
            name: parameters[src["componentInputParameter"]]
            for name, src in task["inputs"]["parameters"].items()
        }

        values = {
            **{f"outputs.artifacts['{k}'].path": str(v) for k, v in outputs.items()},
            **{f"inputs.artifacts['{k}'].path": str(v) for k, v in artifacts.items()},
            **{f"inputs.parameters['{k}']": v for k, v in params.items()},
        }
        argv = [
            re.sub(r"\{\{\$\.([^}]+)\}\}", lambda m: values[m[1]], a)  # noqa: B023 - used at once
            for a in container["command"] + container.get("args", [])
        ]
        env = {
            **os.environ,
            "PATH": f"{BIN}:{os.environ['PATH']}",
            "TMPDIR": str(scratch),
            "DVC_NO_ANALYTICS": "1",
        }
        result = subprocess.run(argv, env=env, capture_output=True, text=True)
        assert result.returncode == 0, f"task {key}: {result.stderr[-3000:]}"
        done[key] = outputs


@pytest.mark.slow
def test_the_compiled_pipeline_runs_with_data_through_the_dvc_remote(kfp_python, tmp_path):
    """Each step pulls exactly its deps from the remote (never sees a sibling's output), runs its cmd in
    its own workspace and pushes its outputs; d gets b's and c's results, which got a's."""
    project, remote = tmp_path / "app", tmp_path / "remote"
    toy_project(project, tmp_path / "unused-default-remote")
    out = tmp_path / "pipeline.yaml"
    code = cli.main(
        [
            "kfp-compile",
            "--dvc-yaml",
            str(project / "dvc.yaml"),
            "--out",
            str(out),
            "--kfp-python",
            str(kfp_python),
            "--project-dir",
            str(project),
            "--image",
            "mlops-pipeline:test",
        ]
    )
    assert code == 0
    scratch = tmp_path / "run"
    scratch.mkdir()
    run_ir(
        yaml.safe_load(out.read_text()), {"dvc_remote_url": str(remote), "mlflow_tracking_uri": ""}, scratch
    )

    # each step's lock entry names its output; fetch them from the remote into a clean project copy
    for name in "abcd":
        entry = json.loads((scratch / name / "lock").read_text())
        assert entry["stage"] == name and [o["path"] for o in entry["lock"]["outs"]] == [f"out/{name}.txt"]
    ws = tmp_path / "check-ws"
    step.prepare(project, ws, str(remote))
    step.merge_locks(ws, [scratch / s / "lock" for s in "abcd"])
    step.dvc(ws, "pull", "out/d.txt", "out/b.txt")
    assert (ws / "out" / "b.txt").read_text() == "b saw a.txt | a saw\n"  # b's workspace had a.txt only
    assert (
        ws / "out" / "d.txt"
    ).read_text() == "d saw b.txt,c.txt | b saw a.txt | a saw | c saw a.txt | a saw\n"
    assert not (tmp_path / "unused-default-remote").exists()  # the pipeline parameter replaced the remote
    assert not (project / "out").exists() and not (project / "dvc.lock").exists()  # the image stays as built
