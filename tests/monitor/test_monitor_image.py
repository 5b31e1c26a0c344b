"""The monitor image (Dockerfile.monitor: the drift CronJob and the retrain webhook receiver), built offline
by the private dockerd of tests/serve/test_docker.py and run as the chart runs it: read-only root, uid
10001, /tmp a tmpfs, no network. It holds no torch and no MLflow, `mlops drift` runs on a prediction log
window against a reference.parquet (exit 0 calm, 7 shifted) and the receiver answers /healthz."""

from __future__ import annotations

import datetime as dt
import json
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from serve.test_docker import _sh, _wheelhouse, build_image, docker  # noqa: F401 - docker is a fixture

from mlops.config import load_params

from .drift_helpers import log_records, synthetic_rows, write_log, write_reference
from conftest import REPO

pytestmark = [pytest.mark.slow, pytest.mark.e2e]
MONITOR_REQUIREMENTS = re.search(
    r'ARG MONITOR_REQUIREMENTS="([^"]+)"', (REPO / "Dockerfile.monitor").read_text()
).group(1)


def test_hadolint_clean():
    hadolint = Path(sys.executable).parent / "hadolint"
    result = subprocess.run([str(hadolint), str(REPO / "Dockerfile.monitor")], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


@pytest.fixture(scope="module")
def monitor_image(docker, tmp_path_factory) -> str:  # noqa: F811
    ctx = tmp_path_factory.mktemp("monitor-context")
    tag = build_image(
        docker, ctx, "Dockerfile.monitor", "mlops-monitor:test", _wheelhouse(MONITOR_REQUIREMENTS)
    )
    size = int(_sh("docker", "image", "inspect", "-f", "{{.Size}}", tag, env=docker))
    print(f"\nimage {tag}: {size / 1e6:.0f} MB")
    return tag


def run(
    env: dict, image: str, *args: str, mounts: dict[Path, str] | None = None, entrypoint: str | None = None
) -> subprocess.CompletedProcess:
    options = [f"--volume={src}:{dst}:ro" for src, dst in (mounts or {}).items()]
    options += ["--entrypoint", entrypoint] if entrypoint else []
    return subprocess.run(
        [
            "docker",
            "run",
            "--rm",
            "--network",
            "none",
            "--read-only",
            "--tmpfs",
            "/tmp",
            "--user",
            "10001:10001",
        ]
        + options
        + [image, *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def readable_dir() -> Path:
    """A directory uid 10001 can read (pytest's temp dirs are private to root)."""
    path = Path(tempfile.mkdtemp(prefix="mlops-monitor-"))
    path.chmod(0o755)
    return path


def test_no_torch_no_mlflow_and_the_clis_parse(docker, monitor_image):  # noqa: F811
    probe = run(
        docker,
        monitor_image,
        "--version",
    )
    assert probe.returncode == 0, probe.stderr
    help_ = run(docker, monitor_image, "drift", "--help")
    assert help_.returncode == 0 and "--log-dir" in help_.stdout and "--reference" in help_.stdout
    trig = run(docker, monitor_image, "trigger-retrain", "--help")
    assert trig.returncode == 0 and "--listen" in trig.stdout
    check = subprocess.run(
        ["docker", "run", "--rm", "--network", "none", "--entrypoint", "python3", monitor_image, "-c"]
        + [
            "import importlib.util as u; print(u.find_spec('torch'), u.find_spec('mlflow'), u.find_spec('evidently') is not None)"
        ],
        env=docker,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert check.stdout.split() == ["None", "None", "True"], check.stdout + check.stderr
    # the webhook receiver starts on the image's params and answers its health check
    script = (
        "mlops --params /app/params.yaml trigger-retrain --listen 127.0.0.1:9095 & "
        "python3 -c 'import time, urllib.request as u\n"
        "for _ in range(100):\n"
        '    try: print(u.urlopen("http://127.0.0.1:9095/healthz").read().decode()); break\n'
        "    except OSError: time.sleep(0.1)'"
    )
    health = run(docker, monitor_image, "-c", script, entrypoint="sh")
    assert json.loads(health.stdout) == {"status": "ok"}, health.stdout + health.stderr


def test_drift_runs_offline_read_only_as_non_root(docker, monitor_image):  # noqa: F811
    schema = load_params(REPO / "params.yaml").schema_  # the params the image holds at /app/params.yaml
    root = readable_dir()
    try:
        model = root / "model"
        model.mkdir()
        write_reference(model / "reference.parquet", schema, n=3000)
        now = dt.datetime.now(dt.UTC) - dt.timedelta(minutes=5)
        calm, shifted = root / "calm", root / "shifted"
        write_log(calm, log_records(synthetic_rows(schema, 1500, 7), now), now)
        frame = synthetic_rows(schema, 1500, 8)
        frame["monthly_charges"] = frame["monthly_charges"] * 1.5  # two features: over the 10% share
        frame.loc[frame.index % 2 == 0, "contract"] = "Two year"
        write_log(shifted, log_records(frame, now), now)
        for path in root.rglob("*"):
            path.chmod(0o755 if path.is_dir() else 0o644)

        def drift(logs: Path) -> subprocess.CompletedProcess:
            return run(
                docker,
                monitor_image,
                "--params",
                "/app/params.yaml",
                "drift",
                "--log-dir",
                "/logs",
                "--reference",
                "/model/reference.parquet",
                "--out-dir",
                "/tmp/drift",
                "--json",
                mounts={logs: "/logs", model: "/model"},
            )

        ok = drift(calm)
        assert ok.returncode == 0, ok.stderr[-3000:]
        assert json.loads(ok.stdout)["status"] == "no_drift"
        found = drift(shifted)
        assert found.returncode == 7, found.stderr[-3000:]
        assert json.loads(found.stdout)["drifted_features"] == ["contract", "monthly_charges"]
    finally:
        shutil.rmtree(root, ignore_errors=True)
