"""Real monitoring servers for the tests (Debian prometheus, prometheus-alertmanager,
prometheus-pushgateway) on 127.0.0.1 and free ports, each in its own process group, stopped by pid."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx

from conftest import free_port, tool


@dataclass
class Daemon:
    name: str
    proc: subprocess.Popen
    port: int
    log: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def tail(self, n: int = 3000) -> str:
        return self.log.read_text(errors="replace")[-n:]


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@contextmanager
def daemon(name: str, args: list[str], root: Path, timeout: float = 30) -> Iterator[Daemon]:
    """Run `tool(name) *args` (`{port}` in an argument becomes a free port) until /-/ready answers 200."""
    port = free_port()
    log = root / f"{name}.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [tool(name), *(a.replace("{port}", str(port)) for a in args)],
            cwd=root,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    d = Daemon(name, proc, port, log)
    try:
        deadline = time.monotonic() + timeout
        while True:
            assert proc.poll() is None, f"{name} exited {proc.returncode}: {d.tail()}"
            try:
                if httpx.get(f"{d.url}/-/ready", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, f"{name} not ready in {timeout}s: {d.tail()}"
            time.sleep(0.1)
        yield d
    finally:
        _stop(proc)


@contextmanager
def alertmanager(config: Path, root: Path) -> Iterator[Daemon]:
    """Alertmanager with `config`; gossip off (an empty cluster address: it would listen on all
    interfaces)."""
    data = root / "alertmanager-data"
    data.mkdir(parents=True, exist_ok=True)
    args = [
        f"--config.file={config}",
        "--web.listen-address=127.0.0.1:{port}",
        "--cluster.listen-address=",
        f"--storage.path={data}",
    ]
    with daemon("prometheus-alertmanager", args, root) as d:
        yield d


@contextmanager
def pushgateway(root: Path) -> Iterator[Daemon]:
    with daemon("prometheus-pushgateway", ["--web.listen-address=127.0.0.1:{port}"], root) as d:
        yield d


@contextmanager
def prometheus(config: Path, root: Path) -> Iterator[Daemon]:
    data = root / "prometheus-data"
    data.mkdir(parents=True, exist_ok=True)
    args = [
        f"--config.file={config}",
        "--web.listen-address=127.0.0.1:{port}",
        f"--storage.tsdb.path={data}",
    ]
    with daemon("prometheus", args, root, timeout=60) as d:
        yield d
