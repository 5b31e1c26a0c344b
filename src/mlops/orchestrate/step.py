"""step: one DVC stage run in its own pod, its data passed through the DVC remote (`mlops kfp-step`).

Every Kubeflow Pipelines step runs this in the project image:
  1. copy the DVC project (the image's checkout) into a fresh workspace; no git there (`core.no_scm`),
     the remote replaced when `--remote-url` is given;
  2. write the upstream steps' dvc.lock entries (small KFP artifacts) into its dvc.lock, so it knows the
     hashes of what they produced, and `dvc pull` exactly the stage's data deps;
  3. run the stage's cmd, which must equal the cmd of the image's dvc.yaml (else the image and the
     compiled pipeline drifted apart: exit 2);
  4. `dvc commit` the stage (hashes into dvc.lock, outputs into the cache), `dvc push` its outputs, and
     write its dvc.lock entry for the downstream steps.
The stage's exit code is the step's: a failed gate (4) fails the step, and the pipeline stops there.
"""

from __future__ import annotations

import json
import logging
import os
import shlex
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from mlops import files
from mlops.errors import ConfigError, DataError, MlopsError
from mlops.orchestrate import dag
from mlops.params_io import read_yaml

log = logging.getLogger(__name__)

SKIP = {".git", "cache", "tmp", "config.local", "__pycache__"}


class StageFailed(MlopsError):
    """The stage's command exited non-zero; the step exits with the same code."""

    def __init__(self, stage: str, code: int) -> None:
        super().__init__(f"stage {stage!r}: its cmd exited {code}")
        self.exit_code = code


def dvc(workspace: Path, *args: str) -> None:
    """Run a DVC command in the workspace; DataError with its output when it fails."""
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    env.setdefault("DVC_SITE_CACHE_DIR", str(workspace / ".dvc" / "tmp" / "site-cache"))
    result = subprocess.run(
        [sys.executable, "-m", "dvc", *args], cwd=workspace, env=env, capture_output=True, text=True
    )
    if result.returncode:
        out = " ".join((result.stdout + result.stderr).split())[-2000:]
        raise DataError(f"dvc {' '.join(args)} failed in {workspace} (exit {result.returncode}): {out}")


def prepare(project: Path, workspace: Path, remote_url: str = "") -> None:
    """Copy the DVC project into the workspace (no git, caches or local config) and set its remote."""
    if not (project / "dvc.yaml").is_file() or not (project / ".dvc").is_dir():
        raise ConfigError(f"{project}: not a DVC project (dvc.yaml and .dvc/ expected)")

    def ignore(directory: str, names: list[str]) -> set[str]:
        top = Path(directory).resolve() == project.resolve()
        dot_dvc = Path(directory).name == ".dvc"
        return {n for n in names if (top and n == ".git") or (dot_dvc and n in SKIP) or n == "__pycache__"}

    shutil.copytree(project, workspace, ignore=ignore, dirs_exist_ok=True, symlinks=True)
    # what `dvc config --local core.no_scm true` and `dvc remote add --local --default` write, without
    # starting DVC twice (seconds each)
    local = "[core]\n    no_scm = true\n"
    if remote_url:
        if any(c in remote_url for c in "\n\r'\""):
            raise ConfigError(f"--remote-url {remote_url!r}: not a URL")
        local += f"    remote = orchestrator\n['remote \"orchestrator\"']\n    url = {remote_url}\n"
    files.write_bytes(workspace / ".dvc" / "config.local", local.encode())


def merge_locks(workspace: Path, upstream: Sequence[Path]) -> list[str]:
    """Write the upstream steps' lock entries into the workspace's dvc.lock; return their stage names."""
    lock_path = workspace / "dvc.lock"
    lock: dict[str, Any] = read_yaml(lock_path) if lock_path.exists() else {}
    lock = lock or {}
    lock.setdefault("schema", "2.0")
    stages = lock.setdefault("stages", {})
    merged = []
    for path in upstream:
        try:
            entry = json.loads(Path(path).read_text())
            name, body = entry["stage"], entry["lock"]
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise DataError(f"{path}: not an upstream step's lock entry ({e})") from e
        stages[name] = body
        merged.append(name)
    files.write_bytes(lock_path, json.dumps(lock, indent=1).encode())  # JSON is YAML: DVC reads it
    return merged


def run(
    stage: str,
    argv: Sequence[str],
    *,
    project: Path,
    pull: Sequence[str] = (),
    upstream_locks: Sequence[Path] = (),
    lock_out: Path,
    remote_url: str = "",
    mlflow_tracking_uri: str = "",
    workspace: Path | None = None,
    jobs: int = 4,
) -> dict[str, Any]:
    """Run one stage as a pipeline step (module docstring); return its dvc.lock entry.

    Raises:
        ConfigError: not a DVC project, or the cmd differs from the project's dvc.yaml (exit 2).
        DataError: a dvc command failed (exit 3).
        StageFailed: the stage's cmd failed (its exit code).
    """
    declared = dag.load(Path(project) / "dvc.yaml")[stage]
    if shlex.split(declared.cmd) != list(argv):
        raise ConfigError(
            f"stage {stage!r}: the pipeline runs {shlex.join(argv)!r} but the image's dvc.yaml says "
            f"{declared.cmd!r}: recompile the pipeline (mlops kfp-compile) or rebuild the image"
        )
    workspace = Path(workspace or tempfile.mkdtemp(prefix=f"mlops-{stage}-"))
    prepare(Path(project), workspace, remote_url)
    merged = merge_locks(workspace, upstream_locks)
    log.info("step %s: workspace %s, upstream locks %s, pulling %s", stage, workspace, merged, list(pull))
    if pull:
        dvc(workspace, "pull", "--jobs", str(jobs), *pull)
    env = dict(os.environ)
    if mlflow_tracking_uri:
        env["MLFLOW_TRACKING_URI"] = mlflow_tracking_uri
    code = subprocess.call(list(argv), cwd=workspace, env=env)
    if code:
        raise StageFailed(stage, code)
    dvc(workspace, "commit", "--force", stage)
    dvc(workspace, "push", "--jobs", str(jobs), stage)
    entry = read_yaml(workspace / "dvc.lock")["stages"][stage]
    files.write_json(lock_out, {"stage": stage, "lock": entry})
    log.info("step %s: pushed %s", stage, [o["path"] for o in entry.get("outs", [])])
    return entry
