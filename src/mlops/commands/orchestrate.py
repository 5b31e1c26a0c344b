"""commands.orchestrate: `mlops dvc-stage`, `mlops kfp-compile`, `mlops kfp-step` and `mlops airflow-dag`
(dvc.yaml for other orchestrators).

Each command: its options (`add_<name>`) beside its handler (`cmd_<name>`), listed in COMMANDS.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from mlops.commands.base import Command


def add_dvc_stage(p: argparse.ArgumentParser) -> None:
    """Options of `mlops dvc-stage`."""
    p.add_argument("stage", help="stage name")
    p.add_argument("--dvc-yaml", type=Path, default=Path("dvc.yaml"))
    p.add_argument("--out", type=Path, default=None, help="write here (default: stdout)")


def cmd_dvc_stage(args: argparse.Namespace, params: Any) -> None:
    from mlops.files import write_bytes
    from mlops.orchestrate import dag

    record = json.dumps(dag.load(args.dvc_yaml).record(args.stage), indent=2) + "\n"
    if args.out:
        write_bytes(args.out, record.encode())
    else:
        print(record, end="")


def add_kfp_compile(p: argparse.ArgumentParser) -> None:
    """Options of `mlops kfp-compile`."""
    p.add_argument("--out", type=Path, required=True, help="pipeline YAML to write")
    p.add_argument("--dvc-yaml", type=Path, default=Path("dvc.yaml"))
    p.add_argument("--image", default=None, help="the project image (default: mlops-pipeline:<version>)")
    p.add_argument("--project-dir", default="/app", help="the DVC project's path in the image")
    p.add_argument("--kfp-python", default=None, help="a Python with kfp (default: $MLOPS_KFP_PYTHON, own)")


def cmd_kfp_compile(args: argparse.Namespace, params: Any) -> None:
    from mlops.orchestrate import dag, kfp_spec

    pipeline = dag.load(args.dvc_yaml)
    spec = kfp_spec.pipeline_spec(pipeline, args.image or kfp_spec.DEFAULT_IMAGE, args.project_dir)
    kfp_spec.compile_pipeline(spec, args.out, args.kfp_python)


def add_kfp_step(p: argparse.ArgumentParser) -> None:
    """Options of `mlops kfp-step`."""
    p.add_argument("--stage", required=True, help="stage name in dvc.yaml")
    p.add_argument("--project", type=Path, default=Path("."), help="the DVC project to copy (default .)")
    p.add_argument("--workspace", type=Path, default=None, help="where to run it (default: a new temp dir)")
    p.add_argument("--pull", action="append", default=[], help="a data dep to dvc pull (repeatable)")
    p.add_argument("--upstream-lock", type=Path, action="append", default=[], help="an upstream lock entry")
    p.add_argument("--lock-out", type=Path, required=True, help="write this stage's dvc.lock entry here")
    p.add_argument("--remote-url", default="", help="DVC remote URL (default: the project's remote)")
    p.add_argument("--mlflow-tracking-uri", default="", help="MLFLOW_TRACKING_URI for the cmd")
    p.add_argument("cmd", nargs="+", help="-- then the stage's cmd (must equal dvc.yaml's)")


def cmd_kfp_step(args: argparse.Namespace, params: Any) -> None:
    from mlops.orchestrate import step

    step.run(
        args.stage,
        args.cmd,
        project=args.project,
        pull=args.pull,
        upstream_locks=args.upstream_lock,
        lock_out=args.lock_out,
        remote_url=args.remote_url,
        mlflow_tracking_uri=args.mlflow_tracking_uri,
        workspace=args.workspace,
    )


def add_airflow_dag(p: argparse.ArgumentParser) -> None:
    """Options of `mlops airflow-dag`."""
    p.add_argument("--out", type=Path, required=True, help="the DAG file to write (e.g. $AIRFLOW_HOME/dags/)")
    p.add_argument("--dvc-yaml", type=Path, default=Path("dvc.yaml"))
    p.add_argument(
        "--mode",
        choices=("local", "kubernetes"),
        default="local",
        help="local: dvc repro per stage in a checkout; kubernetes: a pod per stage (KubernetesPodOperator)",
    )
    p.add_argument("--dag-id", default="mlops_dvc_pipeline", help="the DAG id (default mlops_dvc_pipeline)")
    p.add_argument(
        "--schedule",
        default=None,
        help="cron: a scheduled retrain DAG ending with `mlops retrain-mr` (local)",
    )
    p.add_argument(
        "--checkout", default=None, help="local: default checkout to run in (default: the project)"
    )
    p.add_argument(
        "--bin-dir", default=None, help="local: default dir with dvc and mlops (default: this env's)"
    )
    p.add_argument(
        "--image", default=None, help="kubernetes: the pipeline image (default mlops-pipeline:<v>)"
    )
    p.add_argument("--project-dir", default="/app", help="kubernetes: the DVC project's path in the image")
    p.add_argument("--namespace", default="default", help="kubernetes: default namespace of the pods")
    p.add_argument(
        "--secret-name",
        default="mlops-pipeline",
        help="kubernetes: Secret with DVC remote and MLflow settings",
    )


def cmd_airflow_dag(args: argparse.Namespace, params: Any) -> None:
    from mlops.orchestrate import airflow_dag, dag

    pipeline = dag.load(args.dvc_yaml)
    source = airflow_dag.dag_source(
        pipeline,
        root=args.dvc_yaml.resolve().parent,
        mode=args.mode,
        dag_id=args.dag_id,
        schedule=args.schedule,
        checkout=args.checkout,
        bin_dir=args.bin_dir,
        image=args.image,
        project_dir=args.project_dir,
        namespace=args.namespace,
        secret_name=args.secret_name,
    )
    airflow_dag.write_dag(source, args.out)


COMMANDS = {
    "dvc-stage": Command(
        "a dvc.yaml stage as JSON: cmd, upstream stages, data deps, outs",
        add_dvc_stage,
        cmd_dvc_stage,
        params=None,
    ),
    "kfp-compile": Command(
        "compile dvc.yaml to a Kubeflow Pipelines definition (IR YAML)",
        add_kfp_compile,
        cmd_kfp_compile,
        params=None,
    ),
    "kfp-step": Command(
        "run one DVC stage as a pipeline step: dvc pull, the cmd, dvc push",
        add_kfp_step,
        cmd_kfp_step,
        params=None,
    ),
    "airflow-dag": Command(
        "generate an Airflow DAG file from dvc.yaml: one task per stage (local dvc repro or a pod each)",
        add_airflow_dag,
        cmd_airflow_dag,
        params=None,
    ),
}
"""Name -> the command (help line, options, handler, which params it loads)."""
