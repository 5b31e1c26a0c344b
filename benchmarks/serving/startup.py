"""startup: `mlops serve` from process start to `/v2/health/ready` = 200, phase by phase, against a baseline.

Two trees run side by side in the same run, alternating (the order rotating) so that both see the
shared machine's load as it comes and goes: `baseline` = the files of `--baseline-ref` (extracted with
`git archive`; the checkout is not touched) and `current` = this checkout. Each runs with its own
params.yaml on the same model directory, as the image's CMD runs it (`mlops --params params.yaml serve
--model-dir models --host 127.0.0.1 --port P`, 2 workers).

- host: the server is started under a small launcher that timestamps (wall clock, shared by every
  process and by containers) the steps of the start-up: interpreter up, `import mlops.cli`,
  `import mlops.serve.server` with the params classes it imports (up to 51a3e21 mlops.config's
  pydantic classes, now mlops.params.serve' msgspec classes), arguments parsed, params.yaml parsed and
  validated (up to 51a3e21 all of it, now the `serve` section), model files' sha256,
  the serving imports (numpy, msgspec, prometheus_client, the app), the runtime preload (uvicorn,
  uvloop, ONNX Runtime), the model loaded in the supervisor (current code), each worker forked,
  listening and ready; the poller records the first 200 from `/v2/health/ready` (polled every 2 ms)
  and when every worker is ready. `python -X importtime` of the same start-up attributes the import
  time to packages (the self time of every module, summed per top-level package).
- docker (`--docker`, needs root and Debian `docker.io` + `debootstrap`, like tests/serve/test_docker.py,
  whose private dockerd and offline image build it reuses): both trees' Dockerfiles are built from the
  same debootstrapped base and wheelhouse, then alternately `docker run -d` as the chart runs it
  (read-only root, uid 10001, tmpfs /tmp, model mounted read-only, host network) until ready; the
  container floor (`docker run -d` of the same image running a bare Python socket that answers 200) shows
  what Docker and the interpreter cost before any of our code runs; and the launcher in the container
  gives the same phases as on the host.

Each figure is the median over `--runs` runs. Results: startup.json and startup.md next to this file.

    python benchmarks/serving/startup.py [--baseline-ref a4fac77] [--runs 9] [--docker] [--markdown-only]
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import HERE, REPO, extract_tree, free_port, machine, ready  # noqa: E402

BASELINE_REF = "51a3e21"  # before `mlops serve` loaded its params without pydantic
TREE_FILES = ("src", "params.yaml", "Dockerfile", ".dockerignore", "pyproject.toml", "README.md")

# Runs `mlops` (cli.main, as the console script does) and prints "MARK <pid> <ms since T0> <step>" on
# stderr at each step. It wraps functions by name, so it works on both trees; steps one tree does not
# have (the supervisor's model load in the baseline) are simply absent.
LAUNCHER = r"""
import os, sys, time
T0 = float(os.environ["STARTUP_T0"])
def mark(step):
    cpu = time.process_time() * 1e3  # this process's CPU time (a forked worker's starts at 0)
    os.write(2, f"MARK {os.getpid()} {(time.time() - T0) * 1e3:.1f} {cpu:.1f} {step}\n".encode())
mark("interpreter")
import mlops.cli as cli
mark("import mlops.cli")
def wrap(mod, name, label):
    f = getattr(mod, name, None)
    if f is None:
        return
    def wrapped(*a, **k):
        mark(label + " begin")
        try:
            return f(*a, **k)
        finally:
            mark(label + " end")
    setattr(mod, name, wrapped)
setup_logging = cli.setup_logging
def args_parsed(*a, **k):
    r = setup_logging(*a, **k)
    mark("args parsed")
    if not hasattr(cli, "_load_params"):  # before the serve params change: main imports mlops.config
        import mlops.config as config
        wrap(config, "load_params", "params")
    return r
cli.setup_logging = args_parsed
wrap(cli, "_load_params", "params")  # the current tree: the params the command reads
import mlops.serve.server as server
wrap(server, "verify", "verify")
wrap(server, "_supervise", "supervise")
from mlops.serve import worker
mark("import mlops.serve.server")
wrap(worker, "preload", "preload")
serve = worker.serve
def worker_serve(*a, **k):
    mark("forked")
    import uvicorn
    from mlops.serve import app
    started = uvicorn.Server.startup
    async def startup(self, *a, **k):
        r = await started(self, *a, **k)
        mark("listening")
        return r
    uvicorn.Server.startup = startup
    on_loaded = app.App._on_loaded
    def loaded(self, *a, **k):
        on_loaded(self, *a, **k)
        mark("model ready")
    app.App._on_loaded = loaded
    serve(*a, **k)
worker.serve = worker_serve
def wrap_app():
    from mlops.serve import app
    wrap(app, "load_model", "supervisor load")
preload = worker.preload
def preload_then_wrap(*a, **k):
    r = preload(*a, **k)
    wrap_app()
    return r
worker.preload = preload_then_wrap
sys.exit(cli.main())
"""

# loads the params as `mlops serve` does in either tree: before the serve params change, all of
# params.yaml through mlops.config (pydantic); now its `serve` section only (mlops.params.serve, msgspec)
LOAD_PARAMS = (
    "import argparse, mlops.cli as c; "
    "c._load_params(argparse.Namespace(params='{path}', params_section='serve')) "
    "if hasattr(c, '_load_params') else __import__('mlops.config').config.load_params('{path}')"
)

# the container floor: Docker + the interpreter + a socket answering 200 to the first request
FLOOR = r"""
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(sys.argv[1]))); s.listen(8)
while True:
    c, _ = s.accept(); c.recv(65536)
    c.sendall(b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"); c.close()
"""

# phases in start-up order: (label, start mark, end mark); "T0" is the process (or `docker run`) start
PHASES = [
    ("process start to interpreter up", "T0", "interpreter"),
    ("import mlops.cli (argparse, logging)", "interpreter", "import mlops.cli"),
    (
        "import mlops.serve.server, with the params classes (baseline: mlops.config, pydantic; "
        "current: mlops.params.serve, msgspec)",
        "import mlops.cli",
        "import mlops.serve.server",
    ),
    ("arguments, logging set-up", "import mlops.serve.server", "args parsed"),
    ("params.yaml: parse (ruamel.yaml) + validate", "args parsed", "params end"),
    ("model files: sha256", "verify begin", "last verify end"),
    ("serving imports (numpy, msgspec, prometheus_client, app)", "last verify end", "preload begin"),
    ("runtime preload (uvicorn, uvloop, onnxruntime)", "preload begin", "preload end"),
    ("supervisor: model load + warm-up (ONNX Runtime)", "preload end", "supervise begin"),
    ("first worker: fork to listening and model ready", "supervise begin", "first worker ready"),
    ("readiness answered (poll every 2 ms)", "first worker ready", "ready 200"),
]


def with_phases(first: float, marks: tuple[dict[str, float], dict[str, float]]) -> dict[str, Any]:
    """One run's result: ms to the first ready 200, to every worker ready (marks), and the phases in
    wall-clock ms and in CPU ms of the process doing them."""
    wall, cpu = marks
    out: dict[str, Any] = {"ready_ms": round(first, 1), "phases": phases(wall), "phases_cpu": phases(cpu)}
    if "all workers ready" in wall:
        out["all_ready_ms"] = round(max(wall["all workers ready"], first), 1)
    return out


def parse_marks(text: str, t_ready: float) -> tuple[dict[str, float], dict[str, float]]:
    """From the launcher's MARK lines: (step -> wall ms since T0, step -> CPU ms of the process that
    marked it). Supervisor steps are its own (the first "verify begin": the weights, then the ONNX
    file); worker steps are those of the worker that was ready first (its CPU time counts from the
    fork); "ready 200" is the poller's first 200."""
    by_pid: dict[int, dict[str, tuple[float, float]]] = {}
    for pid, wall, cpu, step in re.findall(r"^MARK (\d+) ([\d.]+) ([\d.]+) (.+)$", text, re.M):
        by_pid.setdefault(int(pid), {}).setdefault(step, (float(wall), float(cpu)))
    supervisor = min(by_pid, key=lambda p: by_pid[p].get("interpreter", (float("inf"),))[0])
    steps = dict(by_pid.pop(supervisor))
    verify_ends = re.findall(rf"^MARK {supervisor} ([\d.]+) ([\d.]+) verify end$", text, re.M)
    if verify_ends:
        steps["last verify end"] = tuple(map(float, verify_ends[-1]))
    workers = [w for w in by_pid.values() if "forked" in w and "listening" in w]
    if workers:

        def up(w: dict[str, tuple[float, float]]) -> tuple[float, float]:
            return max((w[k] for k in ("listening", "model ready") if k in w), key=lambda m: m[0])

        first = min(workers, key=lambda w: up(w)[0])
        steps["first worker ready"] = up(first)
        steps["all workers ready"] = max((up(w) for w in workers), key=lambda m: m[0])
    wall = {"T0": 0.0, "ready 200": t_ready, **{k: v[0] for k, v in steps.items()}}
    cpu = {"T0": 0.0, **{k: v[1] for k, v in steps.items()}}
    if "first worker ready" in cpu and "supervise begin" in cpu:  # a worker's CPU time counts from its fork
        cpu["first worker ready"] += cpu["supervise begin"]
    return wall, cpu


def phases(marks: dict[str, float]) -> dict[str, float | None]:
    out: dict[str, float | None] = {}
    for label, a, b in PHASES:
        out[label] = round(marks[b] - marks[a], 1) if a in marks and b in marks else None
    return out


def wait_ready(url: str, t0: float, alive, timeout: float = 120.0, poll: float = 0.002) -> float:
    """ms from the wall-clock `t0` to the first 200 from `url` (polled every `poll` s)."""
    while not ready(url, timeout=1.0):
        if not alive() or time.time() - t0 > timeout:
            raise RuntimeError("server exited or never became ready")
        time.sleep(poll)
    return (time.time() - t0) * 1e3


def settle(seconds: float = 0.5) -> None:
    """Let the workers finish starting (their last marks) before the server is stopped."""
    time.sleep(seconds)


# ----------------------------------------------------------------------------- host
def host_run(src: Path, params: Path, model_dir: Path, tmp: Path, importtime: bool = False) -> dict[str, Any]:
    port = free_port()
    log = tmp / f"host-{port}.log"
    env = {**os.environ, "PYTHONPATH": str(src), "TMPDIR": str(tmp)}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    if importtime:
        env["PYTHONPROFILEIMPORTTIME"] = "1"
    cmd = [sys.executable, "-c", LAUNCHER, "--params", str(params), "serve", "--model-dir", str(model_dir)]
    cmd += ["--host", "127.0.0.1", "--port", str(port)]
    t0 = time.time()
    env["STARTUP_T0"] = repr(t0)
    proc = subprocess.Popen(cmd, env=env, cwd=tmp, stdout=subprocess.DEVNULL, stderr=open(log, "wb"))
    try:
        first = wait_ready(f"http://127.0.0.1:{port}/v2/health/ready", t0, lambda: proc.poll() is None)
        settle()
    finally:
        proc.terminate()
        proc.wait(30)
    text = log.read_text()
    if importtime:
        return {"imports_ms": import_self_time(text)}
    return with_phases(first, parse_marks(text, first))


def import_self_time(text: str) -> dict[str, float]:
    """`-X importtime` of the supervisor: self time (ms) summed per top-level package."""
    totals: dict[str, float] = {}
    for line in text.splitlines():  # the workers import almost nothing; their lines are counted too
        m = re.match(r"import time:\s+(\d+) \|\s+\d+ \|\s*(\S+)", line)
        if m:
            root = m.group(2).split(".")[0]
            totals[root] = totals.get(root, 0.0) + int(m.group(1)) / 1e3
    assert totals, "no -X importtime lines"
    return {k: round(v, 1) for k, v in sorted(totals.items(), key=lambda kv: -kv[1])}


def interpreter_floor(runs: int) -> float:
    """ms for `python -c pass` (median): what any Python server pays before its first import."""
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", "pass"], check=True)
        times.append((time.perf_counter() - t0) * 1e3)
    return round(statistics.median(times), 1)


# ----------------------------------------------------------------------------- docker
def build_images(trees: dict[str, Path], tmp: Path, docker: dict[str, str]) -> dict[str, str]:
    from serve.test_docker import _wheelhouse, build_image

    # one wheelhouse with what either tree's Dockerfile installs (the baseline's has pydantic and pyyaml)
    names = set()
    for root in trees.values():
        m = re.search(r'ARG SERVE_REQUIREMENTS="([^"]+)"', (root / "Dockerfile").read_text())
        names |= set(m.group(1).split()) if m else set()
    wheelhouse = _wheelhouse(" ".join(sorted(names)))
    tags = {}
    for label, root in trees.items():
        ctx = tmp / f"ctx-{label}"
        ctx.mkdir()
        tags[label] = build_image(docker, ctx, "Dockerfile", f"mlops-serve:startup-{label}", wheelhouse, root)
    return tags


def docker_run(
    docker: dict[str, str], image: str, mounted: Path, how: str, tmp: Path
) -> dict[str, Any] | None:
    """One container start to ready: `how` = "cmd" (the image's own entrypoint and CMD), "launcher"
    (the same command under the timestamping launcher) or "floor" (a bare Python socket)."""
    port = free_port()
    name = f"mlops-startup-{port}"
    args = ["docker", "run", "-d", "--name", name, "--read-only", "--tmpfs", "/tmp", "--user", "10001"]
    args += ["--network", "host", "-v", f"{mounted}:/models:ro"]
    serve = ["serve", "--model-dir", "/models", "--host", "127.0.0.1", "--port", str(port)]
    t0 = time.time()
    if how == "cmd":
        args += [image, *serve]
    elif how == "launcher":
        args += ["-e", f"STARTUP_T0={t0!r}", "--entrypoint", "python3", image, "-c", LAUNCHER]
        args += ["--params", "/app/params.yaml", *serve]
    else:
        args += ["--entrypoint", "python3", image, "-S", "-c", FLOOR, str(port)]
    subprocess.run(args, env=docker, check=True, capture_output=True)
    try:
        url = f"http://127.0.0.1:{port}/" + ("" if how == "floor" else "v2/health/ready")

        def alive() -> bool:
            out = subprocess.run(
                ["docker", "inspect", "-f", "{{.State.Running}}", name], env=docker, capture_output=True
            )
            return out.stdout.strip() == b"true"

        checks = {"n": 0}

        def cheap_alive() -> bool:  # `docker inspect` costs ~50 ms: only every 200th poll
            checks["n"] += 1
            return checks["n"] % 200 or alive()

        first = wait_ready(url, t0, cheap_alive)
        if how == "launcher":
            settle()
        logs = subprocess.run(["docker", "logs", name], env=docker, capture_output=True, text=True).stderr
    finally:
        subprocess.run(["docker", "rm", "-f", name], env=docker, capture_output=True)
    if how != "launcher":
        return {"ready_ms": round(first, 1)}
    return with_phases(first, parse_marks(logs, first))


def docker_importtime(docker: dict[str, str], image: str) -> dict[str, float]:
    """The serving imports in the image (as the supervisor does them), self time per package."""
    code = (
        "import os; os.environ['PROMETHEUS_MULTIPROC_DIR'] = '/tmp'; os.environ['OMP_NUM_THREADS'] = '1'; "
        f"{LOAD_PARAMS.format(path='/app/params.yaml')}; "
        "import mlops.serve.server; from mlops.serve import worker; worker.preload('onnx')"
    )
    out = subprocess.run(
        ["docker", "run", "--rm", "--read-only", "--network", "host", "--entrypoint", "python3"]
        + [image, "-X", "importtime", "-c", code],
        env=docker,
        capture_output=True,
        text=True,
        check=True,
    ).stderr
    return import_self_time(out)


# ----------------------------------------------------------------------------- report
def median_imports(runs: list[dict[str, float]]) -> dict[str, float]:
    """Per package, the median over runs (a package absent from a run counts 0)."""
    names = {k for r in runs for k in r}
    med = {k: round(statistics.median(r.get(k, 0.0) for r in runs), 1) for k in names}
    return dict(sorted(med.items(), key=lambda kv: -kv[1]))


def median_run(found: list[dict[str, Any]]) -> dict[str, Any]:
    """Medians (and the best ready time) over the runs; every run is kept under "each"."""
    out: dict[str, Any] = {"runs": len(found), "each": found}
    for key in ("ready_ms", "all_ready_ms"):
        values = [r[key] for r in found if key in r]
        if values:
            out[key] = round(statistics.median(values), 1)
            out[key.replace("_ms", "_min_ms")] = round(min(values), 1)
    for key in ("phases", "phases_cpu"):
        if found and key in found[0]:
            out[key] = {}
            for label, _, _ in PHASES:
                values = [r[key][label] for r in found if r[key].get(label) is not None]
                out[key][label] = round(statistics.median(values), 1) if values else None
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model-dir", type=Path, default=REPO / "models")
    ap.add_argument("--baseline-ref", default=BASELINE_REF, help="git revision of the baseline")
    ap.add_argument("--runs", type=int, default=9, help="starts per tree and setting (medians reported)")
    ap.add_argument("--docker", action="store_true", help="also build both images and start containers")
    ap.add_argument("--out", type=Path, default=HERE / "startup.json")
    ap.add_argument("--markdown-only", action="store_true", help="only rewrite startup.md from --out")
    args = ap.parse_args()
    if args.markdown_only:
        args.out.with_suffix(".md").write_text(markdown(json.loads(args.out.read_text())))
        return
    model_dir = args.model_dir.resolve()
    tmp = Path(tempfile.mkdtemp(prefix="bench-startup-"))
    base = extract_tree(args.baseline_ref, tmp / "baseline-tree", TREE_FILES)
    trees = {"baseline": base, "current": REPO}
    result: dict[str, Any] = {
        "machine": machine(),
        "baseline_ref": args.baseline_ref,
        "current_ref": subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True
        ).stdout.strip(),
        "runs": args.runs,
    }
    labels = list(trees)
    host: dict[str, list[dict[str, Any]]] = {label: [] for label in labels}
    for i in range(args.runs):
        for label in labels[i % 2 :] + labels[: i % 2]:
            run = host_run(trees[label] / "src", trees[label] / "params.yaml", model_dir, tmp)
            host[label].append(run)
            print(f"host run {i + 1} {label}: ready {run['ready_ms']} ms", file=sys.stderr, flush=True)
    result["host"] = {label: median_run(found) for label, found in host.items()}
    result["host"]["python -c pass"] = interpreter_floor(args.runs)
    result["host_imports_ms"] = {
        label: median_imports(
            [
                host_run(trees[label] / "src", trees[label] / "params.yaml", model_dir, tmp, True)[
                    "imports_ms"
                ]
                for _ in range(3)
            ]
        )
        for label in labels
    }
    if args.docker:
        result["docker"] = docker_part(trees, model_dir, tmp, args.runs)
    result["machine"]["load_average_after"] = os.getloadavg()
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    args.out.with_suffix(".md").write_text(markdown(result))
    print(markdown(result))
    shutil.rmtree(tmp, ignore_errors=True)


def docker_part(trees: dict[str, Path], model_dir: Path, tmp: Path, runs: int) -> dict[str, Any]:
    from serve.test_docker import _world_readable_copy, dockerd

    out: dict[str, Any] = {}
    mounted = _world_readable_copy(model_dir)
    try:
        with dockerd() as docker:
            images = build_images(trees, tmp, docker)
            out["image_bytes"] = {
                label: int(
                    subprocess.run(
                        ["docker", "image", "inspect", "-f", "{{.Size}}", tag],
                        env=docker,
                        capture_output=True,
                        text=True,
                        check=True,
                    ).stdout
                )
                for label, tag in images.items()
            }
            found: dict[str, list[dict[str, Any]]] = {}
            labels = list(images)
            for i in range(runs):
                for label in labels[i % 2 :] + labels[: i % 2]:
                    for how in ("cmd", "launcher"):
                        run = docker_run(docker, images[label], mounted, how, tmp)
                        found.setdefault(f"{label} {how}", []).append(run)
                        print(f"docker run {i + 1} {label} {how}: {run['ready_ms']} ms", file=sys.stderr)
                found.setdefault("floor", []).append(
                    docker_run(docker, images["current"], mounted, "floor", tmp)
                )
            out.update({key: median_run(runs_) for key, runs_ in found.items()})
            out["imports_ms"] = {
                label: median_imports([docker_importtime(docker, tag) for _ in range(3)])
                for label, tag in images.items()
            }
            subprocess.run(["docker", "rmi", *images.values()], env=docker, capture_output=True)
    finally:
        shutil.rmtree(mounted, ignore_errors=True)
    return out


def markdown(r: dict[str, Any]) -> str:
    m = r["machine"]
    lines = [
        "# Serving start-up: process start to ready (generated by startup.py; do not edit)",
        "",
        f"{m['cpus']} CPUs, Python {m['python']}, load average {m['load_average'][0]:.1f} before and "
        f"{m['load_average_after'][0]:.1f} after: a machine shared with other agents' builds and tests, so "
        "compare the columns of this run, not figures of another run. Baseline = "
        f"`{r['baseline_ref']}`, current = this checkout (HEAD `{r['current_ref']}` plus its changes); "
        f"medians of {r['runs']} starts each, alternating. `mlops serve` with 2 workers on "
        "127.0.0.1, the image's arguments.",
        "",
    ]
    sections = [("Host (`mlops serve`)", r["host"], "baseline", "current")]
    if "docker" in r:
        sections.append(
            ("Docker (`docker run -d` as the chart runs it)", r["docker"], "baseline cmd", "current cmd")
        )
    for title, data, b, c in sections:
        lines += [f"## {title}", "", "| | baseline | current | current / baseline |", "|---|---|---|---|"]
        for key, name in (
            ("ready_ms", "start to first `/v2/health/ready` 200, median (ms)"),
            ("ready_min_ms", "the same, best run (ms)"),
            ("all_ready_ms", "start to every worker ready, median (ms, the launcher's timestamps)"),
        ):
            if key in data[b]:
                lines.append(
                    f"| {name} | {data[b][key]:.0f} | {data[c][key]:.0f} | {data[c][key] / data[b][key]:.2f} |"
                )
        if "floor" in data:
            lines.append(
                "| floor: `docker run -d` + `python3 -S` answering on a socket, median / best (ms) | "
                f"{data['floor']['ready_ms']:.0f} / {data['floor']['ready_min_ms']:.0f} | | |"
            )
        if "python -c pass" in data:
            lines.append(f"| floor: `python -c pass` (ms) | {data['python -c pass']:.0f} | | |")
        rb = data.get(b.replace("cmd", "launcher"), data[b])
        rc = data.get(c.replace("cmd", "launcher"), data[c])
        if rb.get("phases") and rc.get("phases"):
            lines += [
                "",
                "Where the time goes (ms, median per phase over the runs; the launcher's timestamps): wall "
                "clock, and CPU time of the process doing it (the supervisor; for the worker phase the "
                "worker that was ready first, from its fork): on a loaded machine the wall clock is mostly "
                "waiting for a core, the CPU time is the work.",
                "",
                "| phase | baseline wall | current wall | baseline CPU | current CPU |",
                "|---|---|---|---|---|",
            ]
            fmt = lambda v: "–" if v is None else f"{v:.0f}"  # noqa: E731
            for label, _, _ in PHASES:
                cells = [fmt(x[k].get(label)) for k in ("phases", "phases_cpu") for x in (rb, rc)]
                lines.append(f"| {label} | {' | '.join(cells)} |")
            total = [sum(v for v in x["phases_cpu"].values() if v is not None) for x in (rb, rc)]
            lines.append(f"| CPU to the first ready worker | | | {total[0]:.0f} | {total[1]:.0f} |")
        lines.append("")
    imports = [("host", r.get("host_imports_ms"))]
    if "docker" in r:
        imports.append(("image", r["docker"].get("imports_ms")))
    for where, data in imports:
        if not data:
            continue
        top = sorted(
            {k for d in data.values() for k in list(d)[:12]}, key=lambda k: -data["current"].get(k, 0)
        )
        lines += [
            f"Import time by package ({where}, `python -X importtime`, self time summed per top-level package, "
            "median of 3 runs; it inflates every import, so read it as shares):",
            "",
            "| package | baseline (ms) | current (ms) |",
            "|---|---|---|",
        ]
        lines += [
            f"| {k} | {data['baseline'].get(k, 0):.0f} | {data['current'].get(k, 0):.0f} |" for k in top
        ]
        lines += [f"| all | {sum(data['baseline'].values()):.0f} | {sum(data['current'].values()):.0f} |", ""]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
