"""kfp_spec: dvc.yaml → a Kubeflow Pipelines definition, one container step per DVC stage.

`pipeline_spec()` is pure Python (no KFP import): for each stage, a KFP component in the SDK's component
YAML format whose container runs `mlops kfp-step --stage <name> ... -- <the stage's cmd>` in the project
image (orchestrate/step.py: dvc pull of its data deps, the cmd, dvc push of its outputs), with one input
per upstream stage (that stage's dvc.lock entry, a small artifact) and one output (its own entry). The
task graph is therefore the DVC DAG, and data moves through the DVC remote, not through KFP.

`compile_pipeline()` hands that spec to `kfp_compile.py` run by a Python that has `kfp` (its pins clash
with the project's protobuf, so it lives in its own virtualenv: README "The pipeline on Kubeflow
Pipelines"), which writes the KFP IR YAML that `kfp` clients upload.
"""

from __future__ import annotations

import json
import logging
import os
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from mlops import __version__
from mlops.errors import ConfigError
from mlops.orchestrate.dag import Pipeline

log = logging.getLogger(__name__)

COMPILER = Path(__file__).with_name("kfp_compile.py")
DEFAULT_IMAGE = f"ghcr.io/example-org/mlops-pipeline:{__version__}"
# pipeline parameters, given to every step (empty: the image's default remote / embedded tracking)
PARAMETERS = {
    "dvc_remote_url": "DVC remote URL replacing the project's default remote (empty: .dvc/config's)",
    "mlflow_tracking_uri": (
        "MLflow tracking URI for the stages that track (empty: MLFLOW_TRACKING_URI of the pod, else the "
        "embedded SQLite store, which the pipeline image's MLflow client cannot write: set a server)"
    ),
}


def lock_input(stage: str) -> str:
    """The name of the input carrying an upstream stage's dvc.lock entry."""
    return f"lock_{stage}"


def component(pipeline: Pipeline, name: str, image: str, project_dir: str) -> dict[str, Any]:
    """The KFP component (SDK component YAML format) running stage `name` in `image`."""
    stage = pipeline[name]
    upstream = pipeline.upstream(name)
    args: list[Any] = ["--project", project_dir, "--lock-out", {"outputPath": "lock"}]
    for path in pipeline.data_deps(name):
        args += ["--pull", path]
    for up in upstream:
        args += ["--upstream-lock", {"inputPath": lock_input(up)}]
    args += ["--remote-url", {"inputValue": "dvc_remote_url"}]
    args += ["--mlflow-tracking-uri", {"inputValue": "mlflow_tracking_uri"}]
    return {
        "name": name,
        "description": f"DVC stage {name}: {stage.cmd}",
        "inputs": [
            {"name": p, "type": "String", "default": "", "description": d} for p, d in PARAMETERS.items()
        ]
        + [{"name": lock_input(up), "description": f"dvc.lock entry of stage {up}"} for up in upstream],
        "outputs": [{"name": "lock", "description": f"dvc.lock entry of stage {name}"}],
        "implementation": {
            "container": {
                "image": image,
                "command": ["mlops", "kfp-step", "--stage", name, *args, "--", *shlex.split(stage.cmd)],
            }
        },
    }


def pipeline_spec(
    pipeline: Pipeline,
    image: str = DEFAULT_IMAGE,
    project_dir: str = "/app",
    name: str = "mlops-dvc-pipeline",
) -> dict[str, Any]:
    """The whole pipeline as plain data: its name, parameters and one step per stage in DAG order."""
    if not image or any(c.isspace() for c in image):
        raise ConfigError(f"--image {image!r}: not an image reference")
    return {
        "name": name,
        "description": f"The DVC pipeline of {pipeline.source} ({' -> '.join(pipeline.stages)}), one step per stage",
        "parameters": dict(PARAMETERS),
        "steps": [
            {
                "stage": stage,
                "upstream": list(pipeline.upstream(stage)),
                "component": component(pipeline, stage, image, project_dir),
            }
            for stage in pipeline.stages
        ],
    }


def compile_pipeline(spec: dict[str, Any], out: Path, python: str | None = None) -> Path:
    """Compile the spec to KFP IR YAML at `out` with `python` (which must have kfp).

    Args:
        spec: pipeline_spec()'s result.
        out: the pipeline YAML to write.
        python: the interpreter with kfp (default: $MLOPS_KFP_PYTHON, else this one).

    Raises:
        ConfigError: that Python has no kfp, or the compiler failed (its message).
    """
    python = python or os.environ.get("MLOPS_KFP_PYTHON") or sys.executable
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as f:
        json.dump(spec, f)
    try:
        result = subprocess.run([python, str(COMPILER), f.name, str(out)], capture_output=True, text=True)
    finally:
        os.unlink(f.name)
    if result.returncode:
        detail = (result.stderr.strip().splitlines() or ["no output"])[-1]
        if "No module named 'kfp'" in result.stderr:
            detail = "kfp is not installed there: build the tool virtualenv with `make kfp-pipeline`"
        raise ConfigError(f"kfp-compile with {python}: {detail}")
    log.info("kfp-compile: %d steps -> %s", len(spec["steps"]), out)
    return out
