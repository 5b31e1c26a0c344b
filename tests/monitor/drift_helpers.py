"""Helpers for the drift tests: synthetic rows of the demo schema, prediction-log files as the server
writes them, and a real Pushgateway (Debian `prometheus-pushgateway`) on 127.0.0.1."""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import signal
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest

from mlops.params.schema import SchemaParams

from conftest import free_port


def synthetic_rows(schema: SchemaParams, n: int, seed: int) -> pd.DataFrame:
    """`n` rows of the schema's features, drawn from fixed distributions (the same for every seed)."""
    rng = np.random.default_rng(seed)
    out: dict[str, Any] = {}
    for name, col in schema.numeric.items():
        if col.integer and col.max - col.min <= 1:
            out[name] = rng.integers(0, 2, n)
        else:
            hi = min(col.max, 100.0)
            values = rng.uniform(col.min, hi, n)
            out[name] = np.round(values) if col.integer else values
    for name, col in schema.categorical.items():
        out[name] = rng.choice(col.categories, n)
    frame = pd.DataFrame(out)
    for name, col in schema.numeric.items():
        if col.integer:
            frame[name] = frame[name].astype("int64")
    return frame


def probabilities(frame: pd.DataFrame, seed: int) -> np.ndarray:
    return np.random.default_rng(seed + 1000).beta(2, 5, len(frame))


def write_reference(path: Path, schema: SchemaParams, n: int = 4000, seed: int = 0) -> Path:
    """A reference.parquet as `mlops register` stages it: raw features, label, probability."""
    frame = synthetic_rows(schema, n, seed)
    frame[schema.label.column] = np.where(np.random.default_rng(seed).random(n) < 0.3, "Yes", "No")
    frame["probability"] = probabilities(frame, seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    frame.to_parquet(path, index=False)
    return path


def stamp(when: dt.datetime) -> str:
    return when.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def log_records(
    frame: pd.DataFrame, when: dt.datetime, proba: np.ndarray | None = None, model: str = "churn-mlp"
) -> list[dict[str, Any]]:
    """Prediction-log records (the keys mlops.serve.predlog writes) for the rows of `frame`."""
    proba = probabilities(frame, 0) if proba is None else proba
    rows = frame.astype(object).where(frame.notna(), None).to_dict("records")
    return [
        {
            "ts": stamp(when),
            "model": model,
            "model_version": "0123456789ab",
            "request_id": str(i),
            "inputs": {k: (v.item() if hasattr(v, "item") else v) for k, v in row.items()},
            "probability": float(p),
            "label": "Yes" if p >= 0.5 else "No",
        }
        for i, (row, p) in enumerate(zip(rows, proba, strict=True))
    ]


def write_log(
    log_dir: Path, records: list[dict[str, Any]], when: dt.datetime, seq: int = 1, per_file: int = 1000
) -> list[Path]:
    """Write records as the server does: `predictions-<UTC time>-<pid>-<seq>.jsonl`, one JSON per line."""
    log_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for i in range(0, len(records), per_file):
        path = log_dir / f"predictions-{when.astimezone(dt.UTC):%Y%m%dT%H%M%S}-4242-{seq:06d}.jsonl"
        path.write_text("".join(json.dumps(r) + "\n" for r in records[i : i + per_file]))
        written.append(path)
        seq += 1
    return written


def strict_json(path: Path) -> Any:
    """Parse JSON refusing NaN/Infinity (what strict parsers do)."""

    def refuse(name: str) -> None:
        raise ValueError(f"{path}: non-strict JSON constant {name}")

    return json.loads(path.read_text(), parse_constant=refuse)


def parse_metrics(text: str) -> dict[tuple[str, frozenset], float]:
    """Prometheus text format -> {(name, frozenset(label pairs)): value} (enough for these metrics)."""
    from prometheus_client.parser import text_string_to_metric_families

    out = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            out[(sample.name, frozenset(sample.labels.items()))] = sample.value
    return out


def pushgateway_process(root: Path) -> Iterator[str]:
    """Start the Debian Pushgateway on a free loopback port; yield its URL; stop it by pid."""
    binary = shutil.which("prometheus-pushgateway")
    assert binary, (
        "prometheus-pushgateway not installed: make system-packages (Debian prometheus-pushgateway)"
    )
    port = free_port()
    log = open(root / "pushgateway.log", "wb")
    proc = subprocess.Popen(
        [binary, f"--web.listen-address=127.0.0.1:{port}"],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, (root / "pushgateway.log").read_text()[-2000:]
            try:
                with urllib.request.urlopen(f"{url}/-/ready", timeout=2) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass
            assert time.monotonic() < deadline, "pushgateway not ready in 30 s"
            time.sleep(0.1)
        yield url
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=20)
        log.close()


@pytest.fixture(scope="session")
def pushgateway(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real Pushgateway (Debian package) on 127.0.0.1 for the session."""
    yield from pushgateway_process(tmp_path_factory.mktemp("pushgateway"))


def scrape(url: str) -> str:
    with urllib.request.urlopen(f"{url}/metrics", timeout=10) as resp:
        return resp.read().decode()
