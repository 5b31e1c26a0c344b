"""The fault injectors the fault suite shares: a real MLflow server that can be stopped and restarted on
the same port and store, `mlops` run as a process (timed, killable), a small disk (a tmpfs, or a file-size
limit where mounting is not allowed), the memory of a process tree, and the model-artifact check.

Nothing here imitates a fault: processes are really killed (SIGKILL), servers really stopped, disks
really full.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import resource
import signal
import subprocess
import sys
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from registry.conftest import register_args

from conftest import Workspace, free_port

BIN = Path(sys.executable).parent
ARTIFACT = ("model.safetensors", "model.onnx", "model.json")


# ---------------------------------------------------------------- processes
@dataclass
class Ran:
    """A finished `mlops` process: exit code, output, wall time."""

    returncode: int
    stdout: str
    stderr: str
    seconds: float

    @property
    def last_line(self) -> str:
        lines = self.stderr.strip().splitlines()
        return lines[-1] if lines else ""


def mlops_env(**changes: str | None) -> dict[str, str]:
    """This process's environment (the session's isolated one) with `changes` (None removes a key)."""
    env = dict(os.environ)
    for key, value in changes.items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return env


def run_mlops(
    *args: str,
    env: dict[str, str] | None = None,
    cwd: Path | None = None,
    timeout: float = 600,
    preexec_fn: Callable[[], None] | None = None,
) -> Ran:
    """Run `mlops *args` as its own process (the installed entry point) and time it."""
    started = time.monotonic()
    proc = subprocess.run(
        [str(BIN / "mlops"), *args],
        env=env or dict(os.environ),
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
        preexec_fn=preexec_fn,
    )
    return Ran(proc.returncode, proc.stdout, proc.stderr, time.monotonic() - started)


def children(pid: int) -> list[int]:
    """Direct children of `pid` (Linux /proc)."""
    found: list[int] = []
    with contextlib.suppress(OSError):
        for task in os.listdir(f"/proc/{pid}/task"):
            with contextlib.suppress(OSError):
                found += [int(p) for p in Path(f"/proc/{pid}/task/{task}/children").read_text().split()]
    return found


def tree(pid: int) -> list[int]:
    """`pid` and all its descendants."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo += children(p)
    return out


def rss_bytes(pid: int) -> int:
    """Resident memory of `pid` and its descendants together (VmRSS, bytes)."""
    total = 0
    for p in tree(pid):
        with contextlib.suppress(OSError):
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1]) * 1024
    return total


def stop_group(proc: subprocess.Popen, sig: int = signal.SIGTERM, timeout: float = 30) -> None:
    """Signal a process group started with start_new_session; SIGKILL it if it outlives `timeout`."""
    if proc.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, sig)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)


# ---------------------------------------------------------------- a registry that can go down
@dataclass
class MlflowServer:
    """A real `mlflow server` (SQLite backend, local artifacts, one worker, 127.0.0.1) whose process group
    can be stopped (SIGKILL: a crash) and started again on the same port with the same store."""

    root: Path
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def artifacts(self) -> Path:
        return self.root / "artifacts"

    def start(self, timeout: float = 120) -> MlflowServer:
        env = mlops_env(MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false", MLFLOW_TRACKING_URI=None)
        log = open(self.root / "server.log", "ab")  # noqa: SIM115 - closed with the process
        self.proc = subprocess.Popen(
            [str(BIN / "mlflow"), "server", "--backend-store-uri", f"sqlite:///{self.root / 'mlflow.db'}"]
            + ["--artifacts-destination", str(self.artifacts), "--host", "127.0.0.1"]
            + ["--port", str(self.port), "--workers", "1"],
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
            cwd=self.root,
        )
        log.close()
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"mlflow server exited {self.proc.returncode}: {self.log_tail()}")
            if self.healthy():
                return self
            if time.monotonic() > deadline:
                raise RuntimeError(f"mlflow server not healthy in {timeout} s: {self.log_tail()}")
            time.sleep(0.3)

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(f"{self.url}/health", timeout=2) as resp:
                return resp.status == 200
        except OSError:
            return False

    def ensure_up(self) -> MlflowServer:
        return self if self.proc is not None and self.proc.poll() is None and self.healthy() else self.start()

    def kill(self) -> None:
        """SIGKILL the whole process group (the server and its worker): a crash, not a shutdown."""
        if self.proc is not None:
            stop_group(self.proc, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while self.healthy() and time.monotonic() < deadline:
            time.sleep(0.1)

    def log_tail(self, n: int = 2000) -> str:
        return (self.root / "server.log").read_text(errors="replace")[-n:]


# ---------------------------------------------------------------- a disk that fills up
@dataclass
class SmallDisk:
    """A directory whose writes fail for lack of space: a real tmpfs of `size` bytes where this machine
    lets the test mount one (root with CAP_SYS_ADMIN), else a file-size limit of `size` bytes
    (RLIMIT_FSIZE, set in the child by `preexec`: a write past it fails with EFBIG)."""

    root: Path
    size: int
    kind: str  # tmpfs | rlimit

    @property
    def preexec(self) -> Callable[[], None] | None:
        if self.kind == "tmpfs":
            return None
        size = self.size
        return lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (size, size))

    @property
    def message(self) -> str:
        """The OS's words for the fault, as the error line gives them."""
        return os.strerror(errno.ENOSPC if self.kind == "tmpfs" else errno.EFBIG)

    def fill(self) -> None:
        """Leave no free space at all (tmpfs): a filler file grows until the disk refuses."""
        if self.kind != "tmpfs":
            return
        chunk = b"\0" * 65536
        with open(self.root / ".filler", "wb", buffering=0) as f:
            for size in (65536, 4096, 512, 1):
                with contextlib.suppress(OSError):
                    while True:
                        f.write(chunk[:size])

    def grow(self, size: int) -> None:
        """Make room (the recovery: an operator frees or enlarges the disk)."""
        if self.kind == "tmpfs":
            (self.root / ".filler").unlink(missing_ok=True)
            subprocess.run(["mount", "-o", f"remount,size={size}", str(self.root)], check=True)
        self.size = size


@contextlib.contextmanager
def small_disk(root: Path, size: int) -> Iterator[SmallDisk]:
    """A SmallDisk at `root` (created); unmounted afterwards. MLOPS_FAULTS_NO_TMPFS=1 forces the
    file-size limit."""
    root.mkdir(parents=True, exist_ok=True)
    mounted = (
        os.geteuid() == 0
        and not os.environ.get("MLOPS_FAULTS_NO_TMPFS")  # to exercise the fallback where mounting works
        and subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(root)],
            capture_output=True,
        ).returncode
        == 0
    )
    try:
        yield SmallDisk(root, size, "tmpfs" if mounted else "rlimit")
    finally:
        if mounted:
            subprocess.run(["umount", "-l", str(root)], capture_output=True)


# ---------------------------------------------------------------- the model artifact
def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def artifact_state(model_dir: Path) -> str | None:
    """The weights sha256 of a complete, consistent artifact in `model_dir`; None when there is none.

    Raises:
        AssertionError: a partial artifact: a file model.json names is missing or does not hash to
            model.json's sha256, or model.json is unreadable while model files exist.
    """
    names = [n for n in ARTIFACT if (model_dir / n).exists()]
    if not names:
        return None
    assert "model.json" in names, f"{model_dir}: model files without model.json: {names}"
    meta = json.loads((model_dir / "model.json").read_text())
    for part in ("weights", "onnx"):
        entry = meta[part]
        path = model_dir / entry["file"]
        assert path.is_file(), f"{path}: named by model.json but missing"
        assert sha256(path) == entry["sha256"], f"{path}: does not match model.json's {part} sha256"
    return meta["weights"]["sha256"]


def leftovers(directory: Path) -> list[str]:
    """Temporary files an interrupted atomic write left (never read: not under an output's name)."""
    return sorted(p.name for p in directory.glob(".*.tmp"))


# ---------------------------------------------------------------- registry and files
def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def register(ws: Workspace, server: MlflowServer, name: str) -> str:
    """`mlops register --json` of a workspace's model as `name` on `server`; returns the version."""
    ran = run_mlops(
        "--params",
        str(ws.params),
        *register_args(ws, name),
        env=mlops_env(MLFLOW_TRACKING_URI=server.url),
        cwd=ws.root,
    )
    assert ran.returncode == 0, ran.stderr[-3000:]
    return json.loads(ran.stdout)["version"]


def tree_bytes(root: Path) -> dict[str, bytes]:
    """Every file under `root` (relative path -> content): what a fault must leave untouched."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}
