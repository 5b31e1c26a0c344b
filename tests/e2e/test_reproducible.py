"""Every stage output is the same bytes whatever the CPU's code paths: the promise behind a committed dvc.lock.

A machine cannot become another CPU, but it can force the code paths another CPU would take:
- each library's own switch, set in the shell the way a user or another runner might have it (ATen's
  CPU capability, MKL's reproducibility branch and instruction ceiling, numpy's dispatch, thread
  counts), which `mlops` must override (mlops.numerics);
- the CPU itself, emulated: QEMU user mode runs the stages on a GenuineIntel Haswell (this suite's
  machines are usually AMD), so MKL, ATen, numpy and ONNX Runtime all read another vendor's CPUID and
  pick their kernels for it, and every instruction is emulated exactly (no approximate reciprocal
  square roots from the host's silicon).
featurize, train (the weights and the ONNX export), evaluate (ONNX Runtime; metrics and plots) and gate
(verdicts) must write identical bytes in every case. One more run with the pin turned off shows the
check can fail.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from mlops import numerics

from conftest import DVC_STAGES, Workspace, new_workspace

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

CHECKED = ("featurize", "train", "evaluate", "gate")

FORCED = {
    "ATen AVX2 kernels": {"ATEN_CPU_CAPABILITY": "avx2"},
    "MKL default branch, AVX2": {"MKL_CBWR": "AUTO", "MKL_ENABLE_INSTRUCTIONS": "AVX2"},
    "MKL SSE4.2 ceiling": {"MKL_ENABLE_INSTRUCTIONS": "SSE4_2"},
    "numpy without its dispatch": {"NPY_DISABLE_CPU_FEATURES": "X86_V3"},
    "threads everywhere": {"OMP_NUM_THREADS": "2", "MKL_NUM_THREADS": "2"},
}


def outputs(stage: str) -> list[str]:
    """The files a stage declares in dvc.yaml (outs and metrics)."""
    spec = DVC_STAGES[stage]
    return [
        next(iter(o)) if isinstance(o, dict) else o for o in [*spec.get("outs", []), *spec.get("metrics", [])]
    ]


def md5(path: Path) -> str:
    """A file's md5; for a directory out (reports/plots), the md5 of its files' names and md5s."""
    if path.is_dir():
        listing = "".join(f"{p.relative_to(path)} {md5(p)}\n" for p in sorted(path.rglob("*")) if p.is_file())
        return hashlib.md5(listing.encode()).hexdigest()
    return hashlib.md5(path.read_bytes()).hexdigest()


def run_stages(source: Workspace, root: Path, env: dict[str, str], prefix: list[str] | None = None) -> dict:
    """Run featurize -> gate as dvc.yaml declares them in a new workspace (raw data and validation
    report copied from `source`) under `prefix` (e.g. qemu); return {output path: md5}."""
    ws = new_workspace(root)
    for rel in ("data/raw/data.parquet", "reports/validation.json"):
        (ws.root / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(source.root / rel, ws.root / rel)
    env = {**env, "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}"}
    here = Workspace(Path("."))  # paths relative to the workspace, as `dvc repro` passes them
    for stage in CHECKED:
        cmd = [
            *(prefix or []),
            sys.executable,
            "-m",
            "mlops",
            "--params",
            "params.yaml",
            *here.stage_args(stage),
        ]
        proc = subprocess.run(cmd, cwd=ws.root, env=env, capture_output=True, text=True, timeout=900)
        assert proc.returncode == 0, (
            f"{' '.join(cmd[:4])} {stage}: exit {proc.returncode}\n{proc.stderr[-3000:]}"
        )
    return {rel: md5(ws.root / rel) for stage in CHECKED for rel in outputs(stage)}


@pytest.fixture(scope="module")
def base_env() -> dict[str, str]:
    env = dict(os.environ)
    env.pop(numerics.OPT_OUT, None)
    return env


@pytest.fixture(scope="module")
def reference(pipeline, base_env, tmp_path_factory) -> dict[str, str]:
    return run_stages(pipeline, tmp_path_factory.mktemp("reference"), base_env)


@pytest.mark.parametrize("case", sorted(FORCED))
def test_forced_code_paths_write_the_same_bytes(case, pipeline, reference, base_env, tmp_path):
    got = run_stages(pipeline, tmp_path / "ws", {**base_env, **FORCED[case]})
    assert got == reference, {k: (reference[k], v) for k, v in got.items() if reference[k] != v}


def test_one_core_writes_the_same_bytes(pipeline, reference, base_env, tmp_path):
    """A runner with another core count: the stages pinned to one CPU."""
    got = run_stages(pipeline, tmp_path / "ws", base_env, prefix=["taskset", "-c", "0"])
    assert got == reference, {k: (reference[k], v) for k, v in got.items() if reference[k] != v}


def qemu() -> str:
    found = shutil.which("qemu-x86_64")
    assert found, "qemu-x86_64 not installed: run tools/system-packages.sh (Debian qemu-user)"
    return found


def test_an_emulated_cpu_of_another_vendor_writes_the_same_bytes(pipeline, reference, base_env, tmp_path):
    """An Intel Haswell (AVX2 + FMA, the scope's floor) emulated by QEMU: every library reads its CPUID."""
    got = run_stages(pipeline, tmp_path / "ws", base_env, prefix=[qemu(), "-cpu", "Haswell-v4"])
    assert got == reference, {k: (reference[k], v) for k, v in got.items() if reference[k] != v}


def test_without_the_pin_the_code_path_changes_the_weights(pipeline, reference, base_env, tmp_path):
    """The check can fail: unpinned, ATen's AVX2 kernels train other weights than its baseline ones."""
    env = {**base_env, numerics.OPT_OUT: "native", "ATEN_CPU_CAPABILITY": "avx2", "MKL_CBWR": "COMPATIBLE"}
    ws = new_workspace(tmp_path / "ws")
    for rel in ("data/raw/data.parquet", "reports/validation.json"):
        (ws.root / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(pipeline.root / rel, ws.root / rel)
    env["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp_path / 'mlflow.db'}"
    for stage in ("featurize", "train"):
        cmd = [sys.executable, "-m", "mlops", "--params", str(ws.params), *ws.stage_args(stage)]
        assert subprocess.run(cmd, cwd=ws.root, env=env, capture_output=True, timeout=600).returncode == 0
    weights = "models/model.safetensors"
    assert md5(ws.root / weights) != reference[weights]
