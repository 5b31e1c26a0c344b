"""Scale benchmark, preprocessing: `mlops featurize` on pandas vs Spark (local[2]) at 1x, 10x and 50x the
demo table.

The bigger tables resample the demo's rows with new ids (`<id>-<copy>`), so the split hash spreads them
like new customers. Each run is `mlops featurize` in its own process, as `dvc repro` runs it; wall time
and the peak memory of its whole process tree (the Python driver, Spark's JVM and its Python workers,
sampled every 50 ms with psutil) are recorded. Engines alternate per size (median of --repeats).

Usage: python benchmarks/scale/featurize.py [--sizes 1,10,50] [--repeats 1] [--out FILE]
Needs data/raw/data.parquet (`make ingest`) and the spark extra (`pip install '.[spark]'`, Java 17+).
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
import threading
import time
from pathlib import Path

import pandas as pd
import psutil
from ruamel.yaml import YAML

REPO = Path(__file__).resolve().parents[2]


def make_table(raw: pd.DataFrame, id_column: str, factor: int, seed: int = 0) -> pd.DataFrame:
    """`factor` x the rows: copy 0 is the table itself, later copies are resampled with new ids."""
    parts = [raw]
    for k in range(1, factor):
        part = raw.sample(n=len(raw), replace=True, random_state=seed + k).reset_index(drop=True)
        part[id_column] = part[id_column].astype(str) + f"-{k}"
        parts.append(part)
    out = pd.concat(parts, ignore_index=True)
    out[id_column] = out[id_column].astype(str)
    return out


def peak_tree_rss(proc: subprocess.Popen, stop: threading.Event, out: list[int]) -> None:
    """Sample the summed RSS of a process and all its descendants until `stop`."""
    try:
        root = psutil.Process(proc.pid)
    except psutil.Error:
        return
    peak = 0
    while not stop.is_set():
        total = 0
        try:
            for p in [root, *root.children(recursive=True)]:
                try:
                    total += p.memory_info().rss
                except psutil.Error:
                    pass
        except psutil.Error:
            break
        peak = max(peak, total)
        time.sleep(0.05)
    out.append(peak)


def run_featurize(ws: Path, env: dict[str, str]) -> tuple[float, int]:
    cmd = [sys.executable, "-m", "mlops", "--params", "params.yaml", "featurize"]
    cmd += ["--data", "raw.parquet", "--validation", "validation.json", "--out-dir", "processed"]
    stop, peak = threading.Event(), []
    start = time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=ws, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    sampler = threading.Thread(target=peak_tree_rss, args=(proc, stop, peak))
    sampler.start()
    _, err = proc.communicate()
    seconds = time.perf_counter() - start
    stop.set()
    sampler.join()
    if proc.returncode:
        raise RuntimeError(f"featurize failed in {ws}: {err.decode()[-2000:]}")
    return seconds, (peak[0] if peak else 0)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="1,10,50")
    ap.add_argument("--repeats", type=int, default=1)
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks/scale/featurize.json")
    args = ap.parse_args()
    raw_path = REPO / "data/raw/data.parquet"
    if not raw_path.exists():
        print("featurize.py: data/raw/data.parquet missing: run `make ingest` first", file=sys.stderr)
        return 2
    from mlops.files import file_digest

    yaml = YAML()
    params = yaml.load((REPO / "params.yaml").read_text())
    id_column = params["schema"]["id"]
    raw = pd.read_parquet(raw_path)
    result: dict = {
        "date": time.strftime("%Y-%m-%d"),
        "machine": {
            "cpus": os.cpu_count(),
            "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
            "python": platform.python_version(),
        },
        "load_average_at_start": [round(x, 1) for x in os.getloadavg()],
        "spark_master": params["featurize"]["spark"]["master"],
        "repeats": args.repeats,
        "sizes": {},
    }
    env = {**os.environ, "DVC_NO_ANALYTICS": "1"}
    with tempfile.TemporaryDirectory() as tmp:
        for factor in (int(s) for s in args.sizes.split(",")):
            table = make_table(raw, id_column, factor)
            runs: dict[str, list[tuple[float, int]]] = {"pandas": [], "spark": []}
            for engine in runs:
                ws = Path(tmp) / f"x{factor}-{engine}"
                ws.mkdir()
                table.to_parquet(ws / "raw.parquet", index=False)
                report = {"passed": True, "data_md5": file_digest(ws / "raw.parquet", "md5")}
                (ws / "validation.json").write_text(json.dumps(report))
                params["featurize"]["engine"] = engine
                with (ws / "params.yaml").open("w") as f:
                    yaml.dump(params, f)
            for _ in range(args.repeats):
                for engine in runs:  # alternate so machine noise hits both alike
                    runs[engine].append(run_featurize(Path(tmp) / f"x{factor}-{engine}", env))
            entry: dict = {"rows": len(table)}
            for engine, values in runs.items():
                entry[engine] = {
                    "wall_s": round(statistics.median(v[0] for v in values), 2),
                    "peak_rss_mib": round(max(v[1] for v in values) / 2**20),
                }
            entry["spark_vs_pandas_time"] = round(entry["spark"]["wall_s"] / entry["pandas"]["wall_s"], 2)
            result["sizes"][f"{factor}x"] = entry
            print(json.dumps({f"{factor}x": entry}), flush=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
