"""common: what the serving benchmarks share (bench.py, tail.py, request_path.py, startup.py).

- `extract_tree`: a git revision's files in a temp dir (`git archive`, the checkout is not touched), to
  run the baseline's code side by side with this tree's in the same run;
- `start_server` / `stop_server`: a server in its own process group, ready once its readiness URL
  answered 200 several times in a row (every worker up, not just the first);
- `wrk`: one wrk (Debian package `wrk`) POST run on 127.0.0.1 with its latency percentiles;
- `machine`: the facts every result file records (CPUs, Python, load average).

The request builders (model spec, real rows, OIP bodies) are the tests' (tests/serve/serve_helpers.py).
"""

from __future__ import annotations

import os
import platform
import re
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
if str(REPO / "tests") not in sys.path:
    sys.path.insert(0, str(REPO / "tests"))

from serve.serve_helpers import free_port  # noqa: E402,F401 - re-exported for the scripts


def machine() -> dict[str, Any]:
    """CPUs, Python version and the current load average (compare figures of one run only)."""
    return {"cpus": os.cpu_count(), "python": platform.python_version(), "load_average": os.getloadavg()}


def extract_tree(ref: str, dest: Path, paths: tuple[str, ...] = ("src", "params.yaml")) -> Path:
    """Extract `paths` of git revision `ref` into `dest` (created); return `dest`."""
    dest.mkdir(parents=True, exist_ok=True)
    archive = subprocess.run(
        ["git", "-C", str(REPO), "archive", ref, *paths], capture_output=True, check=True
    ).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    return dest


def ready(url: str, timeout: float = 1.0) -> bool:
    """Whether `url` answers 200 now (connection refused or reset: no)."""
    import httpx

    try:
        return httpx.get(url, timeout=timeout).status_code == 200
    except httpx.TransportError:
        return False


def start_server(
    cmd: list[str],
    ready_url: str,
    env: dict[str, str],
    cwd: Path,
    log: Path,
    consecutive: int = 20,
    timeout: float = 180.0,
) -> tuple[subprocess.Popen, float]:
    """Start a server in its own process group; return it and the seconds until `ready_url` first
    answered 200. Returns once it answered 200 `consecutive` times in a row (every worker ready)."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        cmd, env=env, cwd=cwd, stdout=open(log, "wb"), stderr=subprocess.STDOUT, start_new_session=True
    )
    ok, first_ok = 0, 0.0
    while ok < consecutive:
        if proc.poll() is not None or time.perf_counter() - t0 > timeout:
            stop_server(proc)
            raise RuntimeError(f"{cmd[0]} did not start: {log.read_text()[-3000:]}")
        up = ready(ready_url)
        if up and not ok:
            first_ok = time.perf_counter() - t0
        ok = ok + 1 if up else 0
        time.sleep(0.005 if ok else 0.01)
    return proc, first_ok


def stop_server(proc: subprocess.Popen) -> None:
    """SIGTERM the server's process group; SIGKILL it if it is still there after 30 s."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(30)
    except ProcessLookupError:
        pass
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


def ms(text: str) -> float:
    """wrk's durations ("812.00us", "1.20ms", "2.01s") in milliseconds."""
    value, unit = re.fullmatch(r"([\d.]+)(us|ms|s|m)", text).groups()
    return float(value) * {"us": 1e-3, "ms": 1.0, "s": 1e3, "m": 6e4}[unit]


def wrk(
    url: str,
    body: bytes,
    conns: int,
    duration: int,
    tmp: Path,
    during: Callable[[], Any] | None = None,
) -> dict[str, Any]:
    """One wrk run POSTing `body` as JSON: req/s, p50/p75/p90/p99 (ms, NaN if nothing completed) and
    errors (non-2xx + socket errors). `during`, if given, is called once the load is on (up to 2 s in)
    and its result is returned as "during"."""
    body_file = tmp / f"body-{len(body)}.json"
    body_file.write_bytes(body)
    script = tmp / f"post-{len(body)}.lua"
    script.write_text(
        f'local f = io.open("{body_file}", "rb")\nwrk.body = f:read("*all")\nf:close()\n'
        'wrk.method = "POST"\nwrk.headers["Content-Type"] = "application/json"\n'
    )
    cmd = ["wrk", "-t", str(min(conns, 2)), "-c", str(conns), "-d", f"{duration}s", "--latency"]
    # wrk's default 2 s timeout counts a slow answer as a socket error and drops its latency
    cmd += ["--timeout", "10s", "-s", str(script), url]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    seen = None
    if during is not None:
        time.sleep(min(2.0, duration / 2))
        seen = during()
    out = proc.communicate()[0]
    if proc.returncode:
        raise RuntimeError(out)
    latency = dict(re.findall(r"^\s+(50|75|90|99)%\s+(\S+)\s*$", out, re.M))
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    result: dict[str, Any] = {
        "rps": float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1)),
        **{f"p{k}_ms": ms(latency[k]) if k in latency else float("nan") for k in ("50", "75", "90", "99")},
        "errors": (int(non2xx.group(1)) if non2xx else 0) + (sum(map(int, sock.groups())) if sock else 0),
    }
    if during is not None:
        result["during"] = seen
    return result
