"""toolenv: virtualenvs for tools whose pins clash with the project's, built once and reused from a cache.

The `kserve` package (the KServe SDK's OIP client) pins protobuf 6 and psutil 5, older than what the
project's environment (MLflow) installs, so it cannot live in the project's virtualenv; nor can `kfp`
(the Kubeflow Pipelines compiler, tests/orchestrate/kfp-requirements.txt). Each tool's exact pins are in
a requirements file; its virtualenv is keyed by their hash and the Python version, under
$MLOPS_TOOL_CACHE (default ~/.cache/mlops-tools), so a changed pin builds a new one and an unchanged
one is reused.

    python tests/serve/oip_clients/toolenv.py                  # the KServe client: build, print its python
    python tests/serve/oip_clients/toolenv.py REQS.txt NAME    # another tool's
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
REQUIREMENTS = HERE / "kserve-requirements.txt"


def cache_dir() -> Path:
    return Path(os.environ.get("MLOPS_TOOL_CACHE", Path.home() / ".cache" / "mlops-tools"))


def kserve_python(build: bool = True) -> Path:
    """The KServe client virtualenv's python, building the virtualenv first if it is missing."""
    return tool_python(REQUIREMENTS, "kserve-client", build)


def tool_python(requirements: Path, name: str, build: bool = True) -> Path:
    """The python of the virtualenv `name` holding `requirements`, built first if it is missing.

    Raises:
        RuntimeError: the build failed (the pip output is in the message).
    """
    key = hashlib.sha256(requirements.read_bytes() + sys.version.encode()).hexdigest()[:12]
    target = cache_dir() / f"{name}-{key}"
    python = target / "bin" / "python"
    if python.exists() or not build:
        return python
    cache_dir().mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f"{name}-", dir=cache_dir()))
    try:
        # built at its final path's sibling and renamed: an interrupted build leaves no half venv behind
        subprocess.run([sys.executable, "-m", "venv", str(tmp)], check=True, capture_output=True)
        result = subprocess.run(
            [
                str(tmp / "bin" / "pip"),
                "install",
                "--quiet",
                "--disable-pip-version-check",
                "-r",
                str(requirements),
            ],
            capture_output=True,
            text=True,
            timeout=1200,
        )
        if result.returncode != 0:
            raise RuntimeError(
                f"pip install -r {requirements} failed:\n{result.stdout[-3000:]}{result.stderr[-3000:]}"
            )
        try:  # only `bin/python -m ...` is used, so the move does not break the venv's scripts
            tmp.rename(target)
        except OSError:
            if not python.exists():  # not another process that built it meanwhile
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return python


if __name__ == "__main__":
    print(tool_python(Path(sys.argv[1]), sys.argv[2]) if len(sys.argv) == 3 else kserve_python())
