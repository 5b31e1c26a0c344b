"""Helpers for the serving tests: start/stop a real `mlops serve` on 127.0.0.1, build OIP requests."""

from __future__ import annotations

import copy
import json
import math
import os
import signal
import struct
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import yaml

from conftest import FIXTURE_PARAMS, REPO, free_port  # noqa: F401 - REPO and free_port re-exported

SPEC_FILE = "open_inference_rest.yaml"
OIP_SPEC_URL = (
    "https://raw.githubusercontent.com/kserve/open-inference-protocol/main/specification/protocol/"
    + SPEC_FILE
)


def oip_spec_locations() -> list[str]:
    """Where the spec is looked for, in order: OIP_SPEC_LOCATION, else ../shared (if present), else the
    canonical published file."""
    if os.environ.get("OIP_SPEC_LOCATION"):
        return [os.environ["OIP_SPEC_LOCATION"]]
    shared = REPO.parent / "shared" / "specs" / "oip"
    return [str(shared), OIP_SPEC_URL] if shared.is_dir() else [OIP_SPEC_URL]


def read_oip_spec(location: str) -> str:
    """The spec's text from a directory, a file or an http(s) URL (a URL to a directory gets the file
    name appended). Raises OSError when it cannot be read."""
    if location.startswith(("http://", "https://")):
        url = (
            location
            if location.endswith((".yaml", ".yml", ".json"))
            else location.rstrip("/") + "/" + SPEC_FILE
        )
        with urllib.request.urlopen(url, timeout=15) as resp:
            return resp.read().decode()
    path = Path(location)
    return (path / SPEC_FILE if path.is_dir() else path).read_text()


class ModelSpec:
    """What a request needs to know about the served model, all read from its model.json."""

    def __init__(self, meta: dict[str, Any]):
        self.meta = meta
        self.name: str = meta["name"]
        self.features: list[dict[str, Any]] = meta["features"]
        self.names = [f["name"] for f in self.features]
        self.by_name = {f["name"]: f for f in self.features}
        self.classes: list[str] = meta["label"].get("classes", [])  # none for a regression model
        self.version: str = meta["weights"]["sha256"][:12]

    @classmethod
    def from_dir(cls, model_dir: Path) -> ModelSpec:
        return cls(json.loads((Path(model_dir) / "model.json").read_text()))

    def datatype(self, name: str) -> str:
        return self.by_name[name]["dtype"]

    def of_kind(self, kind: str, dtype: str | None = None) -> list[dict[str, Any]]:
        """Features of `kind` (numeric | categorical), optionally of one dtype (INT64 | FP64)."""
        return [f for f in self.features if f["kind"] == kind and dtype in (None, f["dtype"])]


def split_rows(raw_table: Path, split_table: Path, spec: ModelSpec) -> list[dict[str, Any]]:
    """Real rows of one split (e.g. data/processed/test.parquet): the raw feature values, JSON-ready
    (None for a missing value, Python scalars), in the split's order."""
    import pandas as pd

    ids = pd.read_parquet(split_table, columns=[spec.meta["id"]])[spec.meta["id"]]
    raw = pd.read_parquet(raw_table).set_index(spec.meta["id"]).loc[ids, spec.names]
    rows = []
    for record in raw.to_dict("records"):
        row = {}
        for name, value in record.items():
            if value is None or (isinstance(value, float) and math.isnan(value)):
                row[name] = None
            elif spec.datatype(name) == "INT64":
                row[name] = int(value)
            elif spec.datatype(name) == "FP64":
                row[name] = float(value)
            else:
                row[name] = str(value)
        rows.append(row)
    return rows


def infer_body(spec: ModelSpec, rows: list[dict[str, Any]], request_id: str | None = None) -> dict[str, Any]:
    """An OIP inference request (JSON) with one [n] tensor per feature."""
    body: dict[str, Any] = {
        "inputs": [
            {
                "name": name,
                "shape": [len(rows)],
                "datatype": spec.datatype(name),
                "data": [r[name] for r in rows],
            }
            for name in spec.names
        ]
    }
    if request_id is not None:
        body["id"] = request_id
    return body


def pack(datatype: str, values: list[Any]) -> bytes:
    """Raw bytes of one tensor as the binary tensor data extension defines them (written out here,
    independently of the server's decoder): little-endian numbers (None -> NaN), BYTES as a 4-byte
    little-endian length + UTF-8 per element."""
    if datatype == "BYTES":
        if None in values:
            raise TypeError("a binary BYTES tensor has no null")
        parts = [v if isinstance(v, bytes) else str(v).encode() for v in values]
        return b"".join(struct.pack("<I", len(p)) + p for p in parts)
    code = {"INT64": "q", "INT32": "i", "FP64": "d", "FP32": "f", "UINT8": "B", "BOOL": "?"}[datatype]
    return struct.pack(f"<{len(values)}{code}", *(math.nan if v is None else v for v in values))


def binary_request(
    body: dict[str, Any], binary_inputs: set[str] | None = None, header_length: int | None = None
) -> tuple[bytes, dict[str, str]]:
    """Move the data of `binary_inputs` (default: all) of a JSON request body after its JSON header.

    Returns (body bytes, headers); `header_length` overrides the true Inference-Header-Content-Length.
    """
    body = copy.deepcopy(body)
    raw = []
    for tensor in body["inputs"]:
        if binary_inputs is None or tensor["name"] in binary_inputs:
            data = pack(tensor["datatype"], tensor.pop("data"))
            tensor.setdefault("parameters", {})["binary_data_size"] = len(data)
            raw.append(data)
    header = json.dumps(body).encode()
    length = len(header) if header_length is None else header_length
    return header + b"".join(raw), {"Inference-Header-Content-Length": str(length)}


def unpack_response(content: bytes, headers: Any) -> dict[str, Any]:
    """The JSON of an inference response, binary outputs decoded back into `data`."""
    length = headers.get("inference-header-content-length")
    if length is None:
        return json.loads(content)
    body = json.loads(content[: int(length)])
    offset = int(length)
    for out in body["outputs"]:
        size = out.get("parameters", {}).get("binary_data_size")
        if size is None:
            continue
        chunk = content[offset : offset + size]
        offset += size
        if out["datatype"] == "BYTES":
            values, pos = [], 0
            while pos < len(chunk):
                (n,) = struct.unpack_from("<I", chunk, pos)
                values.append(chunk[pos + 4 : pos + 4 + n].decode())
                pos += 4 + n
            out["data"] = values
        else:
            out["data"] = list(struct.unpack(f"<{size // 8}d", chunk))
    assert offset == len(content), f"{len(content) - offset} bytes after the last binary output"
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

    @property
    def spec(self) -> ModelSpec:
        return ModelSpec.from_dir(self.model_dir)

    def infer_url(self, name: str | None = None) -> str:
        return f"{self.url}/v2/models/{name or self.spec.name}/infer"

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
