"""mlops.numerics: the pinned numeric code paths reach every `mlops` process, whatever the user's shell set.

The byte-level proof (every stage output identical under forced code paths and emulated CPUs) is in
tests/e2e/test_reproducible.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

from mlops import numerics


def test_pin_overrides_what_the_shell_set():
    env = {"MKL_CBWR": "AVX2", "ATEN_CPU_CAPABILITY": "avx512", "OTHER": "kept"}
    numerics.pin(env)
    assert env["MKL_CBWR"] == "COMPATIBLE"
    assert env["ATEN_CPU_CAPABILITY"] == "default"
    assert "X86_V4" in env["NPY_DISABLE_CPU_FEATURES"].split()
    assert env["OTHER"] == "kept"


def test_native_opt_out_pins_nothing():
    env = {numerics.OPT_OUT: "native", "MKL_CBWR": "AVX2"}
    assert numerics.pin(env) == []
    assert env["MKL_CBWR"] == "AVX2" and "ATEN_CPU_CAPABILITY" not in env


def test_mlops_processes_and_their_children_run_pinned():
    """`mlops` sets the variables before torch loads, so torch runs its baseline kernels even when the
    shell asked for AVX2 (and torchrun ranks, started by `mlops train`, inherit the environment)."""
    code = (
        "import os, json\n"
        "from mlops import numerics; numerics.pin()\n"
        "import torch\n"
        "print(json.dumps({'capability': torch.backends.cpu.get_cpu_capability(),"
        " 'env': {k: os.environ.get(k) for k in numerics.PINNED}}))\n"
    )
    env = {**os.environ, "ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "AUTO"}
    env.pop(numerics.OPT_OUT, None)
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    seen = json.loads(out.stdout)
    assert seen["capability"] == "DEFAULT"
    assert seen["env"] == numerics.PINNED


def test_the_cli_pins_before_running_a_command():
    env = {**os.environ, "MKL_CBWR": "AUTO"}
    env.pop(numerics.OPT_OUT, None)
    code = (
        "import os, sys\n"
        "from mlops import cli\n"
        "rc = cli.main(['--help'])\n"
        "print(os.environ.get('MKL_CBWR'))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True)
    assert out.stdout.strip().splitlines()[-1] == "COMPATIBLE"
