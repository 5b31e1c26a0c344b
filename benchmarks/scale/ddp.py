"""Scale benchmark, training: the training loop in 1 process vs 2 DDP processes (torchrun, gloo, CPU).

Each setting runs the project's `train.fit` (the loop `mlops train` runs, same device/DDP code path,
mlops.distributed) under `torchrun --standalone --nproc-per-node N` and times `fit()` alone inside the
ranks, so process start-up, imports and the rendezvous are reported separately (wall) and do not
swamp a loop that takes about a second on the demo. Early stopping is off (every epoch runs); the same
global batch size in both settings (the weights agree: tests/test_distributed.py). Settings alternate
over --repeats rounds (median) so machine noise hits both alike.

Usage: python benchmarks/scale/ddp.py [--repeats 3] [--epochs 20] [--batch-size 64] [--out FILE]
Needs data/processed (`make featurize`).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def worker(epochs: int, batch_size: int, device: str) -> None:
    """One rank (or the single process): time fit() on data/processed; rank 0 prints JSON."""
    from mlops import distributed
    from mlops.config import load_params
    from mlops.stages import train

    p = load_params(REPO / "params.yaml").train
    p = p.model_copy(
        update={
            "epochs": epochs,
            "batch_size": batch_size,
            "device": device,
            "early_stopping": p.early_stopping.model_copy(update={"patience": epochs + 1}),
        }
    )
    names = json.loads((REPO / "data/processed/preprocess.json").read_text())["feature_names"]
    tr, va = (train.load_split(REPO / f"data/processed/{s}.parquet", names) for s in ("train", "valid"))
    ctx = distributed.init(p)
    try:
        start = time.perf_counter()
        _, history = train.fit(tr, va, p, ctx)
        seconds = time.perf_counter() - start
    finally:
        distributed.shutdown(ctx)
    if ctx.is_main:
        print(json.dumps({"fit_s": seconds, "epochs": len(history), "rows": len(tr.y), **ctx.describe()}))


def run_setting(nproc: int, epochs: int, batch_size: int, device: str) -> dict:
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={nproc}"]
    cmd += [__file__, "--worker", "--epochs", str(epochs), "--batch-size", str(batch_size)]
    cmd += ["--device", device]
    start = time.perf_counter()
    done = subprocess.run(
        cmd, env={**os.environ, "OMP_NUM_THREADS": "1"}, check=True, capture_output=True, text=True
    )
    wall = time.perf_counter() - start
    out = json.loads(done.stdout.strip().splitlines()[-1])
    return {**out, "wall_s": wall}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--device", default="cpu", choices=["cpu", "cuda", "auto"])
    ap.add_argument("--nprocs", default="1,2", help="process counts to compare (default %(default)s)")
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks/scale/ddp.json")
    args = ap.parse_args()
    if args.worker:
        worker(args.epochs, args.batch_size, args.device)
        return 0
    if not (REPO / "data/processed/train.parquet").exists():
        print("ddp.py: data/processed/train.parquet missing: run `make featurize` first", file=sys.stderr)
        return 2
    runs: dict[int, list[dict]] = {int(n): [] for n in args.nprocs.split(",")}
    for _ in range(args.repeats):
        for nproc in runs:
            runs[nproc].append(run_setting(nproc, args.epochs, args.batch_size, args.device))
    rows = runs[1][0]["rows"]
    result: dict = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "train_rows": rows,
        "global_batch_size": args.batch_size,
        "epochs": args.epochs,
        "device": args.device,
        "repeats": args.repeats,
        "settings": {},
    }
    for nproc, results in runs.items():
        fit_s = statistics.median(r["fit_s"] for r in results)
        result["settings"][f"{nproc}proc"] = {
            "fit_s": round(fit_s, 3),
            "rows_per_s": round(rows * args.epochs / fit_s),
            "wall_s": round(statistics.median(r["wall_s"] for r in results), 2),
            "backend": results[0]["backend"],
        }
    if {1, 2} <= set(runs):
        one, two = result["settings"]["1proc"], result["settings"]["2proc"]
        result["ratio_2proc_vs_1proc_rows_per_s"] = round(two["rows_per_s"] / one["rows_per_s"], 3)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
