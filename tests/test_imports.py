"""Each entry point imports only what it runs (a pipeline stage pays for its imports on every `dvc repro`):
importing a module loads none of the heavy libraries it does not need at import time. Each case runs in
a fresh interpreter, so nothing imported by other tests hides a regression."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from conftest import REPO

HEAVY = ("pydantic", "torch", "pandas", "numpy", "sklearn", "mlflow", "matplotlib", "pandera", "onnxruntime")
CASES = {
    # `mlops --help` and usage errors: argparse only (params are loaded once a command runs)
    "from mlops.cli import main\ntry:\n    main(['--help'])\nexcept SystemExit:\n    pass": {
        "pydantic",
        "torch",
        "pandas",
        "numpy",
        "mlflow",
    },
    # `mlops serve` up to forking its workers (params, server, runtime, app): no pydantic (its `serve`
    # section is msgspec, mlops.params.serve), no torch with the default ONNX backend
    "from mlops import cli\n"
    "cli._operation_params(cli.parse_args(['serve']))\n"
    "import mlops.serve.server, mlops.serve.worker as w, mlops.serve.app\nw.preload('onnx')": {
        "pydantic",
        "torch",
        "pandas",
        "mlflow",
        "sklearn",
    },
    # the metrics are numpy: scikit-learn is only the tests' reference
    "import mlops.metrics": {"sklearn", "torch", "pandas", "mlflow"},
    # evaluate scores the served ONNX export; torch and ONNX Runtime load in run(), whichever is used
    "import mlops.stages.evaluate": {"sklearn", "mlflow", "matplotlib", "pandera", "torch", "onnxruntime"},
    # the gate loads torch and pandas in run(); `mlops report` renders its markdown without them
    "import mlops.stages.gate": {"sklearn", "torch", "pandas", "mlflow", "matplotlib"},
    "import mlops.report": {"sklearn", "torch", "mlflow", "matplotlib", "onnxruntime"},
    # the champion comparison loads torch, pandas and MLflow only when there is a champion to score
    "import mlops.compare": {"sklearn", "torch", "pandas", "mlflow", "matplotlib", "onnxruntime"},
    "import mlops.gitops.promote": {"torch", "pandas", "numpy", "mlflow", "sklearn"},
    # pandera only explains a table that fails the fast check
    "import mlops.stages.validate": {"pandera", "torch", "sklearn", "mlflow"},
    # MLflow loads when the run is logged, not at import
    "import mlops.stages.train": {"mlflow", "sklearn", "matplotlib", "pandera"},
}


# slow: a fresh interpreter importing mlops.stages.train loads torch (~4-5 s); the ci-test-e2e job runs it
SLOW = {"import mlops.stages.train"}


@pytest.mark.parametrize(
    "code",
    [pytest.param(c, marks=pytest.mark.slow) if c in SLOW else c for c in CASES],
    ids=[c.splitlines()[0] for c in CASES],
)
def test_import_loads_no_library_it_does_not_use(code):
    probe = f"{code}\nimport json, sys\nprint(json.dumps([m for m in {HEAVY!r} if m in sys.modules]))"
    proc = subprocess.run(
        [sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    loaded = set(json.loads(proc.stdout.strip().splitlines()[-1]))
    assert not loaded & CASES[code], f"{code!r} loaded {sorted(loaded & CASES[code])}"
