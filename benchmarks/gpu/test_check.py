"""benchmarks/gpu/check.sh on a machine without a GPU: it says so and exits 0 (the device check itself runs
on a lent GPU machine). It lives with the script, so a team that deletes benchmarks/ deletes its test too
(pyproject.toml's `testpaths` lists both tests/ and benchmarks/)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

HERE = Path(__file__).resolve().parent


# slow: the GPU check script imports torch in a fresh interpreter (~6 s)
@pytest.mark.slow
def test_gpu_check_script_skips_clearly_without_a_gpu():
    done = subprocess.run(
        ["bash", str(HERE / "check.sh")],
        env={**os.environ, "CUDA_VISIBLE_DEVICES": "", "PYTHON": sys.executable},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.startswith("gpu/check.sh: skipped: torch sees no CUDA device here"), done.stdout
