"""server: start-up checks, the worker processes and their supervisor.

`run` verifies the model files (missing: exit 5; sha256 mismatch: exit 6) before anything listens,
imports the model runtime (ONNX Runtime; torch only with `serve.backend: torch`) and the app once (with
ONNX Runtime on one thread it also loads the verified model once: ONNX Runtime refusing it is exit 5), then
forks `serve.workers` uvicorn processes that each bind the port
with SO_REUSEPORT (the kernel spreads connections evenly, and a worker closing its socket on SIGTERM
really refuses new connections).
With several workers Prometheus runs in multiprocess mode on a fresh temp directory. The supervisor
forwards SIGTERM/SIGINT to the workers, waits `grace_period_s` (+2 s) for them, then kills stragglers;
if a worker dies on its own, it stops the rest and exits 1 so the orchestrator restarts the container.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import shutil
import signal
import socket
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from mlops.artifact import verify
from mlops.errors import ConfigError, MlopsError, ModelNotReady
from mlops.params.serve import ServeParams, to_builtins

log = logging.getLogger(__name__)


def bind(host: str, port: int, reuseport: bool) -> socket.socket:
    """A TCP socket bound to host:port (not listening yet)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    if reuseport:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
    # accepted connections inherit it: without it Nagle holds the response body (uvicorn writes headers
    # and body separately) until the client's delayed ACK, ~40 ms, whenever a worker has several clients
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise ConfigError(f"--host {host} --port {port}: cannot bind ({e.strerror})") from e
    sock.set_inheritable(True)
    return sock


def run(
    params: ServeParams,
    model_dir: str | os.PathLike[str],
    host: str = "127.0.0.1",
    port: int = 8080,
    model_version: str | None = None,
) -> None:
    """Serve the model in `model_dir` until SIGTERM/SIGINT.

    Logging is configured by the caller (the CLI's --log-json/--debug); the forked workers inherit it.

    Args:
        params: the `serve` section of params.yaml.
        model_dir: directory with model.json and the weights.
        host: bind address.
        port: TCP port (a fixed port: workers share it with SO_REUSEPORT).
        model_version: version shown by the API and /metrics; default env MLOPS_MODEL_VERSION, else the
            first 12 hex digits of the weights' sha256.

    Raises:
        ModelNotReady: model files missing (exit 5). ChecksumMismatch: weights altered (exit 6).
        ConfigError: the port cannot be bound (exit 2). MlopsError: a worker died (exit 1).
    """
    model_dir = Path(model_dir).resolve()
    meta, _ = verify(model_dir)  # before importing a runtime: fast, clear exit codes
    if params.backend == "onnx":
        verify(model_dir, "onnx")  # the file served; the loader verifies the bytes it loads again
    version = model_version or os.environ.get("MLOPS_MODEL_VERSION") or meta["weights"]["sha256"][:12]
    bind(host, port, reuseport=False).close()  # fail early and clearly when the port is taken
    prom_dir = tempfile.mkdtemp(prefix="mlops-prometheus-")
    # before any import of prometheus_client or torch: they read these once
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = prom_dir
    # torch.set_num_threads only affects the calling thread's OpenMP pool: fix it process-wide, or the
    # event-loop thread runs forward passes on one OpenMP thread per core and the workers oversubscribe
    # (ONNX Runtime takes its threads from the session options; numpy's BLAS reads these too)
    os.environ["OMP_NUM_THREADS"] = os.environ["MKL_NUM_THREADS"] = str(params.threads)
    from mlops.serve import worker
    from mlops.serve.app import Settings, load_model

    worker.preload(params.backend)
    model = None
    # ONNX Runtime with one intra-op thread starts no thread pool, so its session survives a fork: load
    # it once here. More threads (a pool a fork would not copy) or torch: each worker loads its own.
    if params.backend == "onnx" and params.threads == 1:
        try:
            model = load_model(str(model_dir), params.backend, params.threads, version)
        except MlopsError:
            raise
        except Exception as e:  # noqa: BLE001 - the runtime's own exception types (warm-up forward)
            raise ModelNotReady(f"{model_dir}: the model does not run on ONNX Runtime ({e})") from e
    settings = Settings(str(model_dir), version, to_builtins(params)).to_json()
    log.info(
        "serving %s version %s from %s (%s) on http://%s:%d with %d worker(s)",
        meta["name"],
        version,
        model_dir,
        params.backend,
        host,
        port,
        params.workers,
    )
    try:
        _supervise(params, lambda: worker.serve(settings, host, port, model))
    finally:
        shutil.rmtree(prom_dir, ignore_errors=True)


def _fork(target: Callable[[], None]) -> int:
    pid = os.fork()
    if pid:
        return pid
    code = 0
    try:  # the child: default signal handlers (uvicorn installs its own), die with the supervisor
        for s in (signal.SIGTERM, signal.SIGINT):
            signal.signal(s, signal.SIG_DFL)
        die_with_parent()
        target()
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    except BaseException:  # noqa: BLE001 - report, then leave without running the parent's cleanup
        log.exception("worker %d failed", os.getpid())
        code = 1
    finally:
        logging.shutdown()
        os._exit(code)


def _supervise(params: ServeParams, target: Callable[[], None]) -> None:
    stopping = False
    children: dict[int, int | None] = {}  # pid -> exit code once reaped

    def forward(signum: int, _frame: Any) -> None:
        nonlocal stopping
        stopping = True
        for pid, code in children.items():
            if code is None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGTERM)

    previous = {s: signal.signal(s, forward) for s in (signal.SIGTERM, signal.SIGINT)}
    failed: tuple[int, int] | None = None
    try:
        for _ in range(params.workers):
            children[_fork(target)] = None
        deadline = None
        while any(code is None for code in children.values()):
            for pid in [p for p, c in children.items() if c is None]:
                done, status = os.waitpid(pid, os.WNOHANG)
                if done:
                    children[pid] = os.waitstatus_to_exitcode(status)
                    if not stopping:
                        failed = (pid, children[pid])
                        log.error("worker %d exited with code %s; stopping the server", *failed)
                        forward(signal.SIGTERM, None)
            if stopping and deadline is None:
                deadline = time.monotonic() + params.grace_period_s + 2.0
            if deadline is not None and time.monotonic() > deadline:
                for pid in [p for p, c in children.items() if c is None]:
                    log.error("worker %d still running after the grace period; killing it", pid)
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                deadline = time.monotonic() + 5.0
            time.sleep(0.05)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
    if failed is not None:
        raise MlopsError(f"server worker {failed[0]} exited unexpectedly with code {failed[1]}")


def die_with_parent() -> None:
    """Ask Linux to SIGTERM this process when its parent (the supervisor) dies."""
    try:
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):  # not Linux: the supervisor's own shutdown still stops us
        pass
