"""airflow_pod: the pod of one DVC stage run by Airflow's KubernetesPodOperator (plain data, no Airflow import).

The pod runs `mlops kfp-step` (orchestrate/step.py) in the pipeline image exactly as a Kubeflow Pipelines
step does: copy the image's project into an emptyDir workspace, write the upstream stages' dvc.lock entries,
`dvc pull` the stage's data deps, run its cmd, `dvc push` its outputs. Airflow carries the lock entries
between tasks as XComs: the step writes its entry to /airflow/xcom/return.json (the operator's XCom file)
and a downstream task gets each upstream entry as an environment variable `MLOPS_LOCK_<STAGE>` rendered
from `ti.xcom_pull` (airflow_dag.py), which the container's shell writes to a file for `--upstream-lock`.

Security context as the training chart's (charts/training-job): restricted Pod Security Standard (non-root
uid, no privilege escalation, ALL capabilities dropped, seccomp RuntimeDefault, read-only root filesystem,
writes only to emptyDirs), no ServiceAccount token. The DVC remote (DVC_REMOTE_URL and its credentials) and
MLflow (MLFLOW_TRACKING_URI and credentials) come from one Secret through envFrom, never inline.
"""

from __future__ import annotations

import re
import shlex
from typing import Any

from mlops.orchestrate.dag import Pipeline

XCOM_FILE = "/airflow/xcom/return.json"  # the KubernetesPodOperator's XCom file (do_xcom_push)
WORKSPACE = "/workspace"
BASE_CONTAINER = "base"  # the operator's name for the container it runs
SECRET_NAME = "mlops-pipeline"  # pragma: allowlist secret (a Secret object's name, not a value)
RUN_AS = 10001
# writes upstream lock entries from $MLOPS_LOCK_<STAGE> to files, then runs the step; "$@" is the rest of
# the kfp-step arguments (--pull ..., -- <the stage's cmd>)
STEP_SCRIPT = """set -eu
locks=""
for var in $MLOPS_UPSTREAM_LOCKS; do
  printenv "$var" > "$TMPDIR/$var.json"
  locks="$locks --upstream-lock $TMPDIR/$var.json"
done
# shellcheck disable=SC2086 # $locks: one word per option (paths without spaces)
exec mlops kfp-step --stage "$MLOPS_STAGE" --project "$MLOPS_PROJECT_DIR" --workspace "$MLOPS_WORKSPACE" \\
  --lock-out "$MLOPS_LOCK_OUT" --remote-url "${DVC_REMOTE_URL:-}" $locks "$@"
"""


def lock_env(stage: str) -> str:
    """The environment variable carrying an upstream stage's dvc.lock entry (JSON) into a task's pod."""
    return "MLOPS_LOCK_" + re.sub(r"[^A-Za-z0-9]", "_", stage).upper()


def container_security_context() -> dict[str, Any]:
    """The restricted container security context (the training chart's)."""
    return {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
    }


def pod_spec(
    pipeline: Pipeline,
    name: str,
    *,
    image: str,
    project_dir: str = "/app",
    secret_name: str = SECRET_NAME,
) -> dict[str, Any]:
    """The V1Pod (as a plain dict, Kubernetes field names) that runs stage `name` in `image`.

    Args:
        pipeline: the stage graph (dag.load()).
        name: the stage.
        image: the pipeline image (the project at `project_dir`, mlops and DVC installed).
        project_dir: where the image holds the DVC project.
        secret_name: the Secret with DVC_REMOTE_URL, MLFLOW_TRACKING_URI and their credentials.

    Returns:
        The pod: its base container runs `mlops kfp-step` for the stage.
    """
    stage = pipeline[name]
    upstream = pipeline.upstream(name)
    args: list[str] = []
    for path in pipeline.data_deps(name):
        args += ["--pull", path]
    args += ["--", *shlex.split(stage.cmd)]
    env = [
        {"name": "HOME", "value": "/tmp"},
        {"name": "TMPDIR", "value": "/tmp"},
        {"name": "DVC_NO_ANALYTICS", "value": "1"},
        {"name": "DVC_SITE_CACHE_DIR", "value": "/tmp/dvc-site-cache"},
        {"name": "MLOPS_STAGE", "value": name},
        {"name": "MLOPS_PROJECT_DIR", "value": project_dir},
        {"name": "MLOPS_WORKSPACE", "value": f"{WORKSPACE}/{name}"},
        {"name": "MLOPS_LOCK_OUT", "value": XCOM_FILE},
        {"name": "MLOPS_UPSTREAM_LOCKS", "value": " ".join(lock_env(u) for u in upstream)},
    ]
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": f"mlops-{re.sub(r'[^a-z0-9-]', '-', name.lower())}",
            "labels": {
                "app.kubernetes.io/name": "mlops-pipeline",
                "app.kubernetes.io/component": re.sub(r"[^A-Za-z0-9_.-]", "-", name)[:63],
                "app.kubernetes.io/managed-by": "airflow",
            },
            "annotations": {"mlops/dvc-stage": name},
        },
        "spec": {
            "restartPolicy": "Never",
            "automountServiceAccountToken": False,
            "enableServiceLinks": False,
            "securityContext": {
                "runAsNonRoot": True,
                "runAsUser": RUN_AS,
                "runAsGroup": RUN_AS,
                "fsGroup": RUN_AS,
                "seccompProfile": {"type": "RuntimeDefault"},
            },
            "containers": [
                {
                    "name": BASE_CONTAINER,
                    "image": image,
                    "imagePullPolicy": "IfNotPresent",
                    "command": ["/bin/sh", "-ec", STEP_SCRIPT, "kfp-step"],
                    "args": args,
                    "env": env,
                    # DVC_REMOTE_URL, MLFLOW_TRACKING_URI and credentials: only from the Secret
                    "envFrom": [{"secretRef": {"name": secret_name}}],
                    "securityContext": container_security_context(),
                    "resources": {
                        "requests": {"cpu": "1", "memory": "2Gi"},
                        "limits": {"cpu": "2", "memory": "4Gi"},
                    },
                    "volumeMounts": [
                        {"name": "workspace", "mountPath": WORKSPACE},
                        {"name": "tmp", "mountPath": "/tmp"},
                    ],
                }
            ],
            "volumes": [
                {"name": "workspace", "emptyDir": {"sizeLimit": "8Gi"}},
                {"name": "tmp", "emptyDir": {"sizeLimit": "1Gi"}},
            ],
        },
    }
