"""Helpers for the serving tests: start/stop a real `mlops serve` on 127.0.0.1, build OIP requests."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml

from conftest import FIXTURE_PARAMS, REPO, free_port

ROW: dict[str, Any] = {
    "tenure": 12,
    "monthly_charges": 70.5,
    "total_charges": 845.2,
    "female": 1,
    "senior_citizen": 0,
    "partner": 1,
    "dependents": 0,
    "phone_service": 1,
    "paperless_billing": 1,
    "contract": "Month-to-month",
    "internet_service": "Fiber optic",
    "payment_method": "Electronic check",
    "multiple_lines": "No",
    "online_security": "No",
    "online_backup": "No",
    "device_protection": "No",
    "tech_support": "No",
    "streaming_tv": "Yes",
    "streaming_movies": "Yes",
}
DTYPES = {"tenure": "INT64", "monthly_charges": "FP64", "total_charges": "FP64"}


def datatype(name: str) -> str:
    value = ROW[name]
    return "BYTES" if isinstance(value, str) else DTYPES.get(name, "INT64")


def infer_body(rows: list[dict[str, Any]], request_id: str | None = None) -> dict[str, Any]:
    """An OIP inference request with one [n] tensor per feature."""
    body: dict[str, Any] = {
        "inputs": [
            {"name": name, "shape": [len(rows)], "datatype": datatype(name), "data": [r[name] for r in rows]}
            for name in ROW
        ]
    }
    if request_id is not None:
        body["id"] = request_id
    return body


@dataclass
class Server:
    """A running `mlops serve` process group."""

    proc: subprocess.Popen
    port: int
    model_dir: Path
    log: Path
    root: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def infer_url(self, name: str = "churn-mlp") -> str:
        return f"{self.url}/v2/models/{name}/infer"

    def stop(self, timeout: float = 30) -> int:
        """SIGTERM the supervisor's process group; return its exit code."""
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        return self.proc.returncode

    def metrics(self) -> str:
        return httpx.get(f"{self.url}/metrics").text


def start_server(
    root: Path, model_dir: Path, wait: bool = True, global_args: tuple[str, ...] = (), **serve: Any
) -> Server:
    """Start `mlops serve` with params.yaml's serve section updated by `serve` (nested dicts merge).

    `global_args` go before the subcommand (e.g. `("--log-json",)`).
    """
    root.mkdir(parents=True, exist_ok=True)
    params = yaml.safe_load(FIXTURE_PARAMS.read_text())
    for key, value in serve.items():
        if isinstance(value, dict):
            params["serve"][key].update(value)
        else:
            params["serve"][key] = value
    (root / "params.yaml").write_text(yaml.safe_dump(params))
    port = free_port()
    log = root / f"server-{port}.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "mlops.cli",
                *global_args,
                "--params",
                str(root / "params.yaml"),
                "serve",
                "--model-dir",
                str(model_dir),
                "--port",
                str(port),
            ],
            cwd=root,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    server = Server(proc, port, model_dir, log, root)
    if wait:
        wait_ready(server)
    return server


def wait_ready(server: Server, timeout: float = 60, consecutive: int = 6) -> None:
    """Poll /v2/health/ready until every worker answers 200 (several consecutive 200s)."""
    deadline = time.monotonic() + timeout
    ok = 0
    while time.monotonic() < deadline:
        if server.proc.poll() is not None:
            raise AssertionError(f"server exited {server.proc.returncode}: {server.log.read_text()[-3000:]}")
        try:
            ok = ok + 1 if httpx.get(f"{server.url}/v2/health/ready", timeout=2).status_code == 200 else 0
        except httpx.TransportError:
            ok = 0
        if ok >= consecutive:
            return
        time.sleep(0.05)
    server.stop()
    raise AssertionError(f"server not ready in {timeout}s: {server.log.read_text()[-3000:]}")
