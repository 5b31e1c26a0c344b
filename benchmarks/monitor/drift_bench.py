"""Benchmark: `mlops drift` on 10,000 logged rows vs a bare Evidently DataDriftPreset run, same data.

The window is 10,000 rows sampled from the demo's test split (raw values), written as ten prediction-log
files of 1,000 rows each, as the server writes them; the reference is the training split. Measured,
median of `--repeats` runs each, side by side in one process:

- `mlops drift` (in-process `mlops.monitor.drift.run`): list and parse the log files, per-feature tests,
  Evidently HTML report, strict-JSON summary, metrics file;
- baseline: `Report([DataDriftPreset()]).run(...)` + `save_html` on the same two frames already in memory
  (the least an Evidently drift job does: no log reading, no summary, no metrics);
- `mlops drift` as a fresh process (`python -m mlops.cli drift`), which adds interpreter start and imports.

Usage: python benchmarks/monitor/drift_bench.py [--rows 10000] [--repeats 3] [--out benchmarks/monitor/results.json]
Needs data/raw/data.parquet and data/processed/{train,test}.parquet (`dvc repro featurize` or `dvc pull`).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def write_window(log_dir: Path, rows, when: dt.datetime) -> None:
    import numpy as np

    rng = np.random.default_rng(0)
    records = rows.astype(object).where(rows.notna(), None).to_dict("records")
    stamp = when.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    for i in range(0, len(records), 1000):
        lines = []
        for r in records[i : i + 1000]:
            inputs = {k: (v.item() if hasattr(v, "item") else v) for k, v in r.items()}
            p = float(rng.random())
            lines.append(
                json.dumps(
                    {
                        "ts": stamp,
                        "model": "churn-mlp",
                        "model_version": "bench",
                        "request_id": None,
                        "inputs": inputs,
                        "probability": p,
                        "label": "Yes" if p >= 0.5 else "No",
                    }
                )
            )
        name = f"predictions-{when:%Y%m%dT%H%M%S}-1-{i // 1000 + 1:06d}.jsonl"
        (log_dir / name).write_text("\n".join(lines) + "\n")


def median_time(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return statistics.median(times)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=10_000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--params", type=Path, default=REPO / "tests/fixtures/demo/params.yaml")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks/monitor/results.json")
    args = ap.parse_args()

    from mlops import tables
    from mlops.config import load_params
    from mlops.errors import DriftDetected
    from mlops.monitor import compare, drift

    params = load_params(args.params)
    schema = params.schema_
    raw, train = REPO / "data/raw/data.parquet", REPO / "data/processed/train.parquet"
    test = tables.split_rows(raw, REPO / "data/processed/test.parquet", schema.id)
    current = test[schema.features].sample(args.rows, replace=True, random_state=0).reset_index(drop=True)
    now = dt.datetime.now(dt.UTC)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        log_dir = tmp / "predictions"
        log_dir.mkdir()
        write_window(log_dir, current, now - dt.timedelta(minutes=1))

        def mlops_drift() -> None:
            try:
                drift.run(
                    params,
                    str(log_dir),
                    str(train),
                    tmp / "out",
                    window_hours=1,
                    metrics_file=tmp / "drift.prom",
                    data=raw,
                )
            except DriftDetected:
                pass

        from evidently import Report
        from evidently.presets import DataDriftPreset

        ref_frame = compare.prepare(drift.load_reference(str(train), schema, raw), schema)
        cur_frame = compare.prepare(current, schema)

        def baseline() -> None:
            snapshot = Report([DataDriftPreset()]).run(current_data=cur_frame, reference_data=ref_frame)
            snapshot.save_html(str(tmp / "baseline.html"))

        baseline()  # warm-up: imports and Evidently's first-run costs, for both
        mlops_drift()
        t_base = median_time(baseline, args.repeats)
        t_drift = median_time(mlops_drift, args.repeats)
        cmd = [
            sys.executable,
            "-m",
            "mlops.cli",
            "--params",
            str(args.params),
            "drift",
            "--log-dir",
            str(log_dir),
            "--reference",
            str(train),
            "--data",
            str(raw),
            "--out-dir",
            str(tmp / "o"),
            "--window-hours",
            "1",
        ]
        t_cli = median_time(lambda: subprocess.run(cmd, capture_output=True, check=False), args.repeats)
        summary = json.loads((tmp / "out/summary.json").read_text())

    result = {
        "rows": args.rows,
        "reference_rows": summary["rows"]["reference"],
        "features": len(schema.features),
        "repeats": args.repeats,
        "cpus": os.cpu_count(),
        "seconds": {
            "mlops_drift_in_process": round(t_drift, 2),
            "baseline_evidently_preset": round(t_base, 2),
            "mlops_drift_cli_process": round(t_cli, 2),
        },
        "ratio_mlops_drift_to_baseline": round(t_drift / t_base, 2),
        "measured_at": now.isoformat(timespec="seconds"),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
