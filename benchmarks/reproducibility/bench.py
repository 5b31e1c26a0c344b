"""What pinning the numeric code paths costs training (mlops.numerics), side by side with the unpinned run.

Each measurement is a fresh process (the pins act when the libraries load): pinned (what `mlops` does)
and `MLOPS_NUMERICS=native` (each library's own CPU dispatch), alternating so a change in the machine's
load hits both. Two figures per run: `fit` (train.fit on data/processed, the training loop alone) and
`mlops train` (the whole command: imports, ONNX export, MLflow tracking).

    python benchmarks/reproducibility/bench.py --repeats 5 --out benchmarks/reproducibility/results.json

Needs data/processed from the demo pipeline (`make run`).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from mlops.numerics import cpu_level

REPO = Path(__file__).resolve().parents[2]

FIT = """
import json, time, sys
from mlops import numerics
numerics.pin()
from pathlib import Path
from mlops.config import load_params
from mlops.stages import train
p = load_params(sys.argv[1]).train
state = json.loads(Path("data/processed/preprocess.json").read_text())
tr, va = (train.load_split(Path(f"data/processed/{s}.parquet"), state["feature_names"]) for s in ("train", "valid"))
t = time.perf_counter(); net, hist = train.fit(tr, va, p); dt = time.perf_counter() - t
import hashlib, torch
w = b"".join(v.numpy().tobytes() for v in net.state_dict().values())
print(json.dumps({"fit_s": dt, "epochs": len(hist), "weights_md5": hashlib.md5(w).hexdigest()}))
"""


def one(mode: str, params: Path, tmp: Path) -> dict:
    env = dict(os.environ, MLFLOW_TRACKING_URI=f"sqlite:///{tmp / 'mlflow.db'}")
    env.pop("MLOPS_NUMERICS", None)
    if mode == "native":
        env["MLOPS_NUMERICS"] = "native"
        for k in ("MKL_CBWR", "ATEN_CPU_CAPABILITY", "NPY_DISABLE_CPU_FEATURES"):
            env.pop(k, None)
    fit = json.loads(
        subprocess.run(
            [sys.executable, "-c", FIT, str(params)],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    )
    t = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "mlops", "--params", str(params), "train", "--model-dir", str(tmp / mode)],
        cwd=REPO,
        env=env,
        capture_output=True,
        check=True,
    )
    return {**fit, "train_s": time.perf_counter() - t}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--params", type=Path, default=REPO / "params.yaml")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks/reproducibility/results.json")
    args = ap.parse_args()
    if not (REPO / "data/processed/train.parquet").is_file():
        print("bench: data/processed is missing: run `make run` first", file=sys.stderr)
        return 2
    runs: dict[str, list[dict]] = {"pinned": [], "native": []}
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.repeats):
            for mode in ("pinned", "native") if i % 2 == 0 else ("native", "pinned"):
                runs[mode].append(one(mode, args.params, Path(tmp)))
    med = {
        m: {k: statistics.median(r[k] for r in rs) for k in ("fit_s", "train_s")} for m, rs in runs.items()
    }
    result = {
        "machine": {
            "cpu": cpu_level()["model"] or platform.machine(),
            "cores": os.cpu_count(),
            "load_avg": os.getloadavg(),
        },
        "repeats": args.repeats,
        "median": med,
        "ratio_pinned_over_native": {k: med["pinned"][k] / med["native"][k] for k in ("fit_s", "train_s")},
        "weights_md5": {m: sorted({r["weights_md5"] for r in rs}) for m, rs in runs.items()},
        "runs": runs,
    }
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({k: result[k] for k in ("median", "ratio_pinned_over_native", "weights_md5")}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
