"""tail: the request path over HTTP, and where its latency tail comes from, against the previous code.

Servers (2 workers each, same model, same params apart from the backend): `baseline` = the server code
at `--baseline-ref` (extracted with `git archive`, torch); `current-torch` and `current-onnx` = this tree
with `serve.backend` torch and onnx (onnx only when the model dir has model.onnx); `current-nofreeze` =
this tree on torch with `gc.freeze()` made a no-op, to show what the frozen heap buys; `mlflow` =
`mlflow models serve` of the same network (bench.py's pyfunc), the baseline of the issue's ratios. All
are started first; then each round runs every scenario (single-row requests at 16 and 64 connections,
64-row requests at 16; wrk, Debian package `wrk`) on every server in turn, the order rotating, so that
all see the shared machine's load as it comes and goes; the best run per server and scenario is kept.
Per mlops run, besides wrk's req/s and p50/p90/p99:

- connections per worker: `ss` during the run, by the owning worker's pid (SO_REUSEPORT balance);
- requests per worker (each worker's own Prometheus multiprocess file) and rows per forward pass;
- garbage-collector pauses per worker: each server runs under a `gc.callbacks` hook that logs every
  collection of generation 1 and 2 (and any longer than 0.5 ms) with its duration.

Results: tail.json (every run) and tail.md next to this file.

    python benchmarks/serving/tail.py [--model-dir models] [--duration 5] [--rounds 3]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import HERE, REPO, extract_tree, free_port, start_server, stop_server, wrk  # noqa: E402
from request_path import BASELINE_REF  # noqa: E402
from serve.serve_helpers import ModelSpec, infer_body, split_rows  # noqa: E402

SCENARIOS = [("single-row c=16", 1, 16), ("single-row c=64", 1, 64), ("64-row c=16", 64, 16)]

# runs the `mlops` CLI under a collector hook; forked workers inherit it (gc.callbacks survives fork)
LAUNCHER = r"""
import gc, os, sys, time
out = os.environ["BENCH_GC_DIR"]
state = {"t": 0.0, "n0": 0, "ms0": 0.0}
def hook(phase, info):
    if phase == "start":
        state["t"] = time.perf_counter()
        return
    ms = (time.perf_counter() - state["t"]) * 1e3
    gen = info["generation"]
    if gen == 0 and ms < 0.5:
        state["n0"] += 1
        state["ms0"] += ms
        if state["n0"] % 200:
            return
        line = f"0sum {state['n0']} {state['ms0']:.3f}\n"
    else:
        line = f"{gen} {ms:.3f} {info.get('collected', 0)}\n"
    with open(f"{out}/gc-{os.getpid()}.log", "a") as f:
        f.write(line)
gc.callbacks.append(hook)
if os.environ.get("BENCH_NO_FREEZE"):
    gc.freeze = lambda: None
from mlops.cli import main
sys.exit(main())
"""


def launch(label: str, src: Path, params: dict[str, Any], model_dir: Path, tmp: Path, no_freeze=False):
    """Start `mlops serve` from `src` under the collector hook; (process, port, work dir)."""
    work = tmp / label
    (work / "gc").mkdir(parents=True)
    (work / "tmp").mkdir()
    (work / "params.yaml").write_text(yaml.safe_dump(params))
    port = free_port()
    env = {
        **os.environ,
        "PYTHONPATH": str(src),
        "BENCH_GC_DIR": str(work / "gc"),
        "TMPDIR": str(work / "tmp"),  # the server's Prometheus multiprocess dir lands here
    }
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    if no_freeze:
        env["BENCH_NO_FREEZE"] = "1"
    cmd = [sys.executable, "-c", LAUNCHER, "--params", str(work / "params.yaml"), "serve"]
    cmd += ["--model-dir", str(model_dir), "--port", str(port)]
    ready_url = f"http://127.0.0.1:{port}/v2/health/ready"
    proc, _ = start_server(cmd, ready_url, env, work, work / "server.log")  # 20 in a row: both workers
    return proc, port, work


def worker_pids(proc) -> list[int]:
    import psutil

    return sorted(c.pid for c in psutil.Process(proc.pid).children())


def connections(port: int) -> dict[int, int]:
    """Established server-side connections on `port`, counted by owning pid."""
    out = subprocess.run(
        ["ss", "-tnpH", "state", "established", f"( sport = :{port} )"], capture_output=True, text=True
    ).stdout
    counts: dict[int, int] = {}
    for pid in re.findall(r"pid=(\d+)", out):
        counts[int(pid)] = counts.get(int(pid), 0) + 1
    return counts


def requests_by_worker(work: Path) -> dict[int, float]:
    """Infer requests counted so far by each worker (its own Prometheus multiprocess file)."""
    from prometheus_client.mmap_dict import MmapedDict

    counts: dict[int, float] = {}
    for path in (work / "tmp").glob("mlops-prometheus-*/counter_*.db"):
        pid = int(path.stem.split("_")[1])
        for key, value, _, _ in MmapedDict.read_all_values_from_file(str(path)):
            _, sample, labels, _ = json.loads(key)
            if sample == "mlops_serve_requests_total" and labels.get("route", "").endswith("/infer"):
                counts[pid] = counts.get(pid, 0) + value
    return counts


def batches(port: int) -> tuple[float, float, dict[float, float]]:
    """(forward passes, rows, infer latency buckets le -> cumulative count) so far, all workers: the
    batch_rows histogram's count and sum, and the server-side request_duration histogram of infer."""
    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=10).text
    count = re.search(r"^mlops_serve_batch_rows_count (\S+)$", text, re.M)
    total = re.search(r"^mlops_serve_batch_rows_sum (\S+)$", text, re.M)
    buckets = {}
    for labels, value in re.findall(
        r"^mlops_serve_request_duration_seconds_bucket\{(.*)\} (\S+)$", text, re.M
    ):
        le = re.search(r'le="([^"]+)"', labels)
        if 'route="/v2/models/{name}/infer"' in labels and le:
            buckets[float(le.group(1))] = float(value)
    return (float(count.group(1)) if count else 0.0, float(total.group(1)) if total else 0.0, buckets)


def server_p99_ms(before: dict[float, float], after: dict[float, float]) -> float | None:
    """The upper bound (ms) of the histogram bucket holding the 99th percentile of the infer requests'
    server-side duration (body read to response sent) between two scrapes."""
    delta = sorted((le, after[le] - before.get(le, 0.0)) for le in after)
    if not delta or delta[-1][1] <= 0:
        return None
    for le, cumulative in delta:
        if cumulative >= 0.99 * delta[-1][1]:
            return le * 1e3
    return None


def schedstat(pids: list[int]) -> dict[int, tuple[int, int]]:
    """Per pid, (ns on a CPU, ns runnable but waiting for one), summed over its threads (Linux)."""
    out: dict[int, tuple[int, int]] = {}
    for pid in pids:
        run = wait = 0
        for task in Path(f"/proc/{pid}/task").glob("*"):
            try:
                fields = (task / "schedstat").read_text().split()
            except OSError:  # a thread that just ended
                continue
            run, wait = run + int(fields[0]), wait + int(fields[1])
        out[pid] = (run, wait)
    return out


def gc_pauses(work: Path) -> dict[int, dict[str, list[float]]]:
    """Per worker pid: durations (ms) of generation-1 and -2 collections, and the gen-0 total."""
    out: dict[int, dict[str, list[float]]] = {}
    for path in (work / "gc").glob("gc-*.log"):
        pid = int(path.stem.split("-")[1])
        found: dict[str, list[float]] = {"0": [], "1": [], "2": [], "0sum": []}
        for line in path.read_text().splitlines():
            parts = line.split()
            found[parts[0]].append(float(parts[2] if parts[0] == "0sum" else parts[1]))
        out[pid] = found
    return out


def load(url: str, body: bytes, conns: int, duration: int, tmp: Path, port: int) -> dict[str, Any]:
    """One wrk run, with the server-side connections per worker pid sampled while it runs."""
    r = wrk(url, body, conns, duration, tmp, during=lambda: connections(port))
    if r["p99_ms"] != r["p99_ms"]:  # NaN: nothing completed
        raise RuntimeError(f"no latency distribution from wrk against {url}")
    r["connections_by_worker"] = r.pop("during")
    return r


def measure(target: dict[str, Any], rows: int, conns: int, duration: int, tmp: Path) -> dict[str, Any]:
    """One wrk run against one server, with its per-worker diagnostics (mlops servers)."""
    work, port, pids = target["work"], target["port"], target["pids"]
    if work is None:  # mlflow: wrk only
        r = load(target["url"], target["body"](rows), conns, duration, tmp, port)
        r.pop("connections_by_worker")
        return r
    before_req, before_gc, before_b = requests_by_worker(work), gc_pauses(work), batches(port)
    before_sched, started = schedstat(pids), time.monotonic()
    r = load(target["url"], target["body"](rows), conns, duration, tmp, port)
    after_sched, wall = schedstat(pids), time.monotonic() - started
    after_req, after_gc, after_b = requests_by_worker(work), gc_pauses(work), batches(port)
    r["server_p99_ms"] = server_p99_ms(before_b[2], after_b[2])
    # the share of the run each worker was on a CPU, and runnable but waiting for one (CPU contention)
    r["cpu_share_by_worker"] = [round((after_sched[p][0] - before_sched[p][0]) / 1e9 / wall, 2) for p in pids]
    r["runqueue_share_by_worker"] = [
        round((after_sched[p][1] - before_sched[p][1]) / 1e9 / wall, 2) for p in pids
    ]
    passes = after_b[0] - before_b[0]
    r["mean_rows_per_forward_pass"] = round((after_b[1] - before_b[1]) / passes, 2) if passes else None
    r["connections_by_worker"] = [r["connections_by_worker"].get(p, 0) for p in pids]
    r["requests_by_worker"] = [after_req.get(p, 0) - before_req.get(p, 0) for p in pids]
    r["gc_by_worker"] = []
    empty: dict[str, list[float]] = {"0": [], "1": [], "2": [], "0sum": []}
    for p in pids:
        old, new = before_gc.get(p, empty), after_gc.get(p, empty)
        gen2, gen1 = new["2"][len(old["2"]) :], new["1"][len(old["1"]) :]
        r["gc_by_worker"].append(
            {
                "gen2_count": len(gen2),
                "gen2_max_ms": round(max(gen2, default=0.0), 2),
                "gen2_total_ms": round(sum(gen2), 1),
                "gen1_count": len(gen1),
                "gen1_max_ms": round(max(gen1, default=0.0), 2),
                "gen0_over_0.5ms": len(new["0"]) - len(old["0"]),
            }
        )
    return r


def start_target(label, src, params, model_dir, tmp, bodies, no_freeze=False) -> dict[str, Any]:
    proc, port, work = launch(label, src, params, model_dir, tmp, no_freeze)
    url = f"http://127.0.0.1:{port}/v2/models/{bodies['name']}/infer"
    response = httpx.post(url, content=bodies[1], headers={"content-type": "application/json"})
    assert response.status_code == 200, response.text
    pids = worker_pids(proc)
    return {"proc": proc, "port": port, "work": work, "pids": pids, "url": url, "body": bodies.__getitem__}


def start_mlflow(model_dir: Path, tmp: Path) -> dict[str, Any]:
    """The baseline the issue's ratios are against: `mlflow models serve` of the same network (bench.py's
    pyfunc, defaults), loaded by the same wrk runs."""
    import bench
    import cloudpickle
    import mlflow

    cloudpickle.register_pickle_by_value(bench)  # the pyfunc class travels with the model, not by import

    env = {
        **os.environ,
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp / 'mlflow.db'}",
        "PATH": f"{Path(sys.executable).parent}:{os.environ.get('PATH', '')}",
    }
    os.environ["MLFLOW_TRACKING_URI"] = env["MLFLOW_TRACKING_URI"]
    cwd = os.getcwd()
    os.chdir(tmp)
    try:
        with mlflow.start_run() as run:
            mlflow.pyfunc.log_model(
                name="model",
                python_model=bench.ChurnPyfunc(),
                artifacts={"model_dir": str(model_dir)},
                pip_requirements=["torch==2.13.0", "mlflow==3.17.2"],
            )
    finally:
        os.chdir(cwd)
    port = free_port()
    cmd = [
        str(Path(sys.executable).parent / "mlflow"),
        "models",
        "serve",
        "-m",
        f"runs:/{run.info.run_id}/model",
    ]
    cmd += ["--env-manager", "local", "-h", "127.0.0.1", "-p", str(port)]
    proc, _ = start_server(cmd, f"http://127.0.0.1:{port}/ping", env, tmp, tmp / "mlflow.log")
    url = f"http://127.0.0.1:{port}/invocations"
    return {"proc": proc, "port": port, "work": None, "pids": [], "url": url, "body": bench.mlflow_body}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model-dir", type=Path, default=REPO / "models")
    ap.add_argument("--data", type=Path, default=REPO / "data/raw/data.parquet")
    ap.add_argument("--split", type=Path, default=REPO / "data/processed/test.parquet")
    ap.add_argument("--baseline-ref", default=BASELINE_REF)
    ap.add_argument("--duration", type=int, default=5, help="seconds per wrk run")
    ap.add_argument("--rounds", type=int, default=3, help="runs per server and scenario (best kept)")
    ap.add_argument("--servers", default="baseline,current-torch,current-onnx,current-nofreeze,mlflow")
    ap.add_argument("--out", type=Path, default=HERE / "tail.json")
    args = ap.parse_args()
    model_dir = args.model_dir.resolve()
    spec = ModelSpec.from_dir(model_dir)
    rows = split_rows(args.data, args.split, spec)
    bodies: dict[Any, Any] = {
        n: json.dumps(infer_body(spec, [rows[i % len(rows)] for i in range(n)])).encode() for n in (1, 64)
    }
    bodies["name"] = spec.name
    tmp = Path(tempfile.mkdtemp(prefix="bench-tail-"))
    base = extract_tree(args.baseline_ref, tmp / "baseline-tree")
    from mlops.params_io import read_yaml

    current = read_yaml(REPO / "params.yaml")
    baseline = read_yaml(base / "params.yaml")
    runs = {
        "baseline": (base / "src", baseline, False),
        "current-torch": (
            REPO / "src",
            {**current, "serve": {**current["serve"], "backend": "torch"}},
            False,
        ),
        "current-onnx": (REPO / "src", {**current, "serve": {**current["serve"], "backend": "onnx"}}, False),
        "current-nofreeze": (
            REPO / "src",
            {**current, "serve": {**current["serve"], "backend": "torch"}},
            True,
        ),
    }
    if not (model_dir / "model.onnx").exists():
        runs.pop("current-onnx")
    wanted = args.servers.split(",")
    results: dict[str, Any] = {
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "duration_s": args.duration,
        "rounds": args.rounds,
        "baseline_ref": args.baseline_ref,
        "baseline_backend": baseline.get("serve", {}).get("backend", "torch"),
        "load_average_before": os.getloadavg(),
    }
    targets: dict[str, dict[str, Any]] = {}
    runs_by: dict[str, dict[str, list[dict[str, Any]]]] = {}
    try:
        for label, (src, params, no_freeze) in runs.items():
            if label in wanted:
                targets[label] = start_target(label, src, params, model_dir, tmp, bodies, no_freeze)
        if "mlflow" in wanted:
            import bench

            bench.SPEC = spec
            bench.ROWS[:] = rows
            targets["mlflow"] = start_mlflow(model_dir, tmp)
        # every server is up; each round runs each scenario on every server in turn (the order rotating),
        # so that all of them see the machine's load as it comes and goes
        runs_by = {t: {s: [] for s, _, _ in SCENARIOS} for t in targets}
        labels = list(targets)
        for i in range(args.rounds):
            for scenario, n, conns in SCENARIOS:
                for label in labels[i % len(labels) :] + labels[: i % len(labels)]:
                    r = measure(targets[label], n, conns, args.duration, tmp)
                    runs_by[label][scenario].append(r)
                    gcs = r.get("gc_by_worker", [])
                    print(
                        f"round {i + 1} {label:>16} {scenario:<16} {r['rps']:>8.0f} req/s p99 {r['p99_ms']:.2f} ms"
                        f" gen2 {[g['gen2_count'] for g in gcs]} max {[g['gen2_max_ms'] for g in gcs]} ms",
                        flush=True,
                    )
    finally:
        for target in targets.values():
            stop_server(target["proc"])
    for label, scenarios in runs_by.items():
        results[label] = {}
        for scenario, found in scenarios.items():
            best_run = max(found, key=lambda x: x["rps"])  # the others were only ever slowed down
            summary = {k: best_run[k] for k in ("rps", "p50_ms", "p75_ms", "p90_ms", "p99_ms", "errors")}
            summary["worst_p99_ms"] = max(x["p99_ms"] for x in found)
            if "gc_by_worker" in best_run:
                summary["mean_rows_per_forward_pass"] = best_run["mean_rows_per_forward_pass"]
                summary["gen2_collections"] = sum(g["gen2_count"] for x in found for g in x["gc_by_worker"])
                summary["gen2_longest_ms"] = max(g["gen2_max_ms"] for x in found for g in x["gc_by_worker"])
                summary["connection_splits"] = [x["connections_by_worker"] for x in found]
                summary["server_p99_ms"] = best_run.get("server_p99_ms")
                summary["cpu_share_by_worker"] = best_run.get("cpu_share_by_worker")
                summary["runqueue_share_by_worker"] = best_run.get("runqueue_share_by_worker")
            summary["runs"] = found
            results[label][scenario] = summary
    if "mlflow" in results:
        results["ratios_vs_mlflow"] = {
            label: {
                s: round(results[label][s]["rps"] / results["mlflow"][s]["rps"], 1) for s, _, _ in SCENARIOS
            }
            for label in runs
            if label in results
        }
    results["load_average_after"] = os.getloadavg()
    args.out.write_text(json.dumps(results, indent=2) + "\n")
    args.out.with_suffix(".md").write_text(markdown(results))
    print(markdown(results))


def markdown(r: dict[str, Any]) -> str:
    servers = [k for k in ("baseline", "current-torch", "current-onnx", "current-nofreeze") if k in r]
    lines = [
        "# Request path over HTTP and its latency tail (generated by tail.py; do not edit)",
        "",
        f"{r['machine']['cpus']} CPUs, Python {r['machine']['python']}; wrk {r['duration_s']} s per run, "
        f"{r['rounds']} rounds in which every server takes every scenario in turn (all servers up at once), "
        "best run by req/s kept (its p50/p90/p99), worst p99 of all rounds beside it; 2 workers per mlops "
        f"server; baseline = server code and params.yaml at `{r['baseline_ref']}` "
        f"(serve.backend: {r.get('baseline_backend', 'torch')}); load average "
        f"{r['load_average_before'][0]:.1f} before, {r['load_average_after'][0]:.1f} after (a machine shared "
        "with other agents: compare within this table only). Per mlops server over all rounds: rows per "
        "forward pass (best run), full (generation-2) collections and the longest one, and the split of the "
        "connections between the two workers (ss, mid-run) in each round; for the best run, the server-side "
        "p99 (request_duration histogram of infer: the upper bound of the bucket holding the 99th "
        "percentile, body read to response sent) and, per worker, the share of the run it spent on a CPU "
        "and runnable but waiting for one (/proc/PID/task/*/schedstat).",
        "",
        "| server | scenario | req/s | p50 ms | p90 ms | p99 ms | worst p99 ms | server p99 ms ≤ | rows/pass "
        "| gen-2 GCs | longest gen-2 ms | connections per worker | on CPU per worker | waiting for a CPU |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for s in servers:
        for scenario, _, _ in SCENARIOS:
            x = r[s][scenario]
            splits = ", ".join("/".join(map(str, c)) for c in x["connection_splits"])
            shares = [
                "/".join(f"{v:.0%}" for v in x.get(k) or []) or "–"
                for k in ("cpu_share_by_worker", "runqueue_share_by_worker")
            ]
            server_p99 = "–" if x.get("server_p99_ms") is None else f"{x['server_p99_ms']:g}"
            lines.append(
                f"| {s} | {scenario} | {x['rps']:.0f} | {x['p50_ms']:.2f} | {x['p90_ms']:.2f} | "
                f"{x['p99_ms']:.2f} | {x['worst_p99_ms']:.2f} | {server_p99} | {x['mean_rows_per_forward_pass']} | "
                f"{x['gen2_collections']} | {x['gen2_longest_ms']} | {splits} | {shares[0]} | {shares[1]} |"
            )
    if "mlflow" in r:
        lines += ["", "| mlflow | scenario | req/s | p50 ms | p99 ms |", "|---|---|---|---|---|"]
        lines += [
            f"| mlflow | {s} | {r['mlflow'][s]['rps']:.0f} | {r['mlflow'][s]['p50_ms']:.2f} | "
            f"{r['mlflow'][s]['p99_ms']:.2f} |"
            for s, _, _ in SCENARIOS
        ]
        lines += [
            "",
            "req/s over `mlflow models serve`'s, same run: "
            + "; ".join(
                f"{label}: " + ", ".join(f"{s} {v}x" for s, v in ratios.items())
                for label, ratios in r["ratios_vs_mlflow"].items()
            ),
        ]
    lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    main()
