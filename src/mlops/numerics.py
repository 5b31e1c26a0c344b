"""numerics: pin the numeric code paths, so every stage writes the same bytes on any x86-64-v3 CPU.

The libraries under the pipeline pick their kernels by the CPU they find, and different kernels round
differently, so the same data, code and params would train other weights on another machine and leave
`dvc.lock` modified. `pin()` (called by `mlops.cli.main` before numpy or torch load, and inherited by
every process a command starts: torchrun ranks, DVC stages, the pipeline image, the KFP steps) selects
one code path per library:

| library | variable | what it selects |
|---|---|---|
| MKL (torch's BLAS) | `MKL_CBWR=COMPATIBLE` | Intel's conditional numerical reproducibility: one SSE2 path on every CPU, Intel or AMD |
| ATen (torch's kernels) | `ATEN_CPU_CAPABILITY=default` | the baseline build of every kernel, not the AVX2/AVX-512 builds |
| numpy | `NPY_DISABLE_CPU_FEATURES` | no AVX-512 loops (numpy's own float64 exp/log there differ from libm's) |

Two more causes are removed in the code, not by a variable: training's Adam runs `fused=True` (the
default foreach Adam takes a square root whose last bits depend on the CPU's approximate instructions;
the fused kernel's is exact), and ONNX Runtime (evaluate, the gate) has no switch at all: its SGEMM
accumulates each output in the same order with fused multiply-adds on every AVX2+FMA CPU.

Scope: x86-64-v3 (AVX2 and FMA: Intel since Haswell, AMD since Excavator/Zen; every cloud CI runner),
with or without AVX-512. Older CPUs without FMA run ONNX Runtime's SSE kernels and glibc's non-FMA
libm, and get other float bits (same bytes from run to run). arm64 and CUDA also give other bytes.
`MLOPS_NUMERICS=native` leaves every library its own dispatch (benchmarks of what pinning costs).
"""

from __future__ import annotations

import os
import sys
from collections.abc import MutableMapping

PINNED: dict[str, str] = {
    "MKL_CBWR": "COMPATIBLE",
    "ATEN_CPU_CAPABILITY": "default",
    # numpy 2.4's dispatch targets above x86-64-v3 (numpy ignores names it does not know)
    "NPY_DISABLE_CPU_FEATURES": "X86_V4 AVX512_ICL AVX512_SPR AVX512F AVX512_SKX",
}
"""The environment every pipeline process runs with (set before the libraries load)."""

OPT_OUT = "MLOPS_NUMERICS"
"""`MLOPS_NUMERICS=native`: do not pin (each library dispatches by the CPU; outputs then depend on it)."""

LIBRARIES = ("numpy", "torch", "onnxruntime")
"""The libraries that read the pinned variables when they load."""

V3_FLAGS = ("avx2", "fma")
"""The CPU flags (as /proc/cpuinfo names them) the reproducibility promise assumes."""


def pin(env: MutableMapping[str, str] = os.environ) -> list[str]:
    """Set the pinned variables in `env` (the process environment by default).

    Overrides whatever the user's shell set (a lock must not depend on it). With `MLOPS_NUMERICS=native`
    nothing is set. Call it before numpy or torch is imported: a library already loaded keeps the code
    path it chose.

    Returns:
        The numeric libraries already loaded with other settings (empty when the pin takes effect).
    """
    if env.get(OPT_OUT, "").strip().lower() == "native":
        return []
    changed = any(env.get(k) != v for k, v in PINNED.items())
    env.update(PINNED)
    return [m for m in LIBRARIES if m in sys.modules] if changed else []


def cpu_level(cpuinfo: str | None = None) -> dict[str, object]:
    """Whether this CPU is inside the reproducibility scope (x86-64 with AVX2 and FMA).

    Args:
        cpuinfo: the text of /proc/cpuinfo (read when None).

    Returns:
        {machine, flags_missing, in_scope, model}; outside Linux or x86-64 `in_scope` is False.
    """
    import platform

    machine = platform.machine()
    if cpuinfo is None:
        try:
            with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
                cpuinfo = f.read()
        except OSError:
            cpuinfo = ""
    flags: set[str] = set()
    model = ""
    for line in cpuinfo.splitlines():
        key, _, value = line.partition(":")
        if key.strip() == "flags" and not flags:
            flags = set(value.split())
        elif key.strip() == "model name" and not model:
            model = value.strip()
    missing = [f for f in V3_FLAGS if f not in flags]
    in_scope = machine in ("x86_64", "AMD64") and not missing
    return {"machine": machine, "model": model, "flags_missing": missing, "in_scope": in_scope}
