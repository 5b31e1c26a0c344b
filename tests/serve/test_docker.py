"""The serving image, built and run for real: hadolint-clean Dockerfile; a private dockerd (no bridge, no
iptables) builds it from a debootstrapped Debian base and a host-built wheelhouse (no registry, no pip
network in the build), then runs it read-only as uid 10001 with the model mounted and checks infer,
/metrics, the HEALTHCHECK and a clean SIGTERM exit. The image has no torch: it serves model.onnx on
ONNX Runtime, answering what the ONNX model computes in-process (and the torch network within the
gate's parity bound).

The base is the debootstrapped Debian slimmed as Debian's and Python's official slim images are (no apt
lists or downloaded packages, docs, man pages or locales), so the image size compares with the
Dockerfile's default `python:3.11-slim-bookworm` base. Measured facts (image size, its layers, start to
ready, RSS and PSS per container process) go to `$MLOPS_DOCKER_CACHE/last-image.json` for the serving
benchmark (benchmarks/serving/), never into assertions.

Caches (keyed by content) live in $MLOPS_DOCKER_CACHE (default ~/.cache/mlops-docker-test): the base
rootfs tarball, the wheelhouse and dockerd's data-root, so a rerun takes seconds, not minutes. Needs root
and Debian `docker.io` + `debootstrap`; set MLOPS_DOCKER_TESTS=0 to skip it on a machine without them.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import numpy as np
import pytest

from mlops import model as model_mod
from mlops import scorer

from .serve_helpers import REPO, free_port, infer_body

pytestmark = [pytest.mark.slow, pytest.mark.e2e]
CACHE = Path(os.environ.get("MLOPS_DOCKER_CACHE", Path.home() / ".cache" / "mlops-docker-test"))
BASE_PACKAGES = "python3,python3-venv,ca-certificates"
SERVE_REQUIREMENTS = re.search(r'ARG SERVE_REQUIREMENTS="([^"]+)"', (REPO / "Dockerfile").read_text()).group(
    1
)


def test_hadolint_clean():
    hadolint = Path(sys.executable).parent / "hadolint"
    result = subprocess.run([str(hadolint), str(REPO / "Dockerfile")], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr


def _sh(*cmd: str, timeout: int = 900, **kw) -> str:
    result = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, **kw)
    assert result.returncode == 0, f"{' '.join(cmd)}\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"
    return result.stdout


def _mirror() -> str:
    """The Debian mirror the host's apt uses (deb822 or one-line sources)."""
    for path in [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]:
        text = path.read_text() if path.is_file() else ""
        m = re.search(r"^URIs:\s*(\S+/debian)\s*$", text, re.M) or re.search(
            r"^deb\s+(?:\[[^]]*\]\s+)?(\S+/debian)\s+bookworm", text, re.M
        )
        if m:
            return m.group(1)
    return "http://deb.debian.org/debian"


def _base_tarball() -> Path:
    mirror = _mirror()
    key = hashlib.sha256(f"bookworm|minbase|{BASE_PACKAGES}|{mirror}".encode()).hexdigest()[:16]
    tarball = CACHE / f"base-bookworm-{key}.tar"
    if not tarball.exists():
        with tempfile.TemporaryDirectory(prefix="mlops-debootstrap-") as tmp:
            root = Path(tmp) / "root"
            _sh(
                "debootstrap",
                "--variant=minbase",
                f"--include={BASE_PACKAGES}",
                "bookworm",
                str(root),
                mirror,
                timeout=1200,
            )
            _sh("tar", "-C", str(root), "-cf", f"{tarball}.tmp", ".")
            os.replace(f"{tarball}.tmp", tarball)
    return tarball


# what Debian's and Python's official slim images leave out (dpkg path-exclude, apt cleanup); copyrights stay
SLIM_EXCLUDE = re.compile(
    r"^\./(var/lib/apt/lists/.|var/cache/apt/.|var/cache/debconf/.*-old$|usr/share/(man|info|locale)/."
    r"|usr/share/doc/[^/]+/(?!copyright$).)"
)


def _slim_base_tarball() -> Path:
    """The debootstrapped base without apt lists/caches, docs, man pages and locales (a filtered copy)."""
    import tarfile

    full = _base_tarball()
    slim = full.with_name(full.name.replace("base-bookworm-", "base-bookworm-slim-"))
    if not slim.exists():
        with tarfile.open(full) as src, tarfile.open(f"{slim}.tmp", "w") as dst:
            for member in src:
                if not SLIM_EXCLUDE.match(member.name):
                    dst.addfile(member, src.extractfile(member) if member.isfile() else None)
        os.replace(f"{slim}.tmp", slim)
    return slim


def _wheelhouse(names: str = SERVE_REQUIREMENTS) -> Path:
    """pip download the serving requirements (pins from pyproject, the rest constrained to this venv).

    `names`: another image's requirement names (Dockerfile.fetch installs `mlflow` as mlflow-skinny).
    """
    text = (REPO / "pyproject.toml").read_text()
    freeze = _sh(sys.executable, "-m", "pip", "freeze", "--exclude-editable")
    key = hashlib.sha256(f"{text}|{freeze}|{names}".encode()).hexdigest()[:16]
    target = CACHE / f"wheelhouse-{key}"
    if not target.exists():
        tmp = Path(tempfile.mkdtemp(prefix="wheelhouse-", dir=CACHE))
        (tmp / "constraints.txt").write_text(
            "\n".join(line for line in freeze.splitlines() if "==" in line and not line.startswith("torch="))
        )
        import tomllib

        deps = tomllib.loads(text)["project"]["dependencies"]
        want = set(names.split())
        reqs = [d for d in deps if re.split(r"[=<>\[; ]", d)[0].lower() in want]
        reqs = [re.sub(r"^mlflow==", "mlflow-skinny==", d) for d in reqs]
        links = os.environ.get("MLOPS_TORCH_WHEEL_DIR", "/opt/wheels")
        _sh(
            sys.executable,
            "-m",
            "pip",
            "download",
            "--quiet",
            "--only-binary=:all:",
            "--dest",
            str(tmp / "w"),
            "--find-links",
            links,
            "-c",
            str(tmp / "constraints.txt"),
            *reqs,
            "setuptools>=68",
            "wheel",
            timeout=1200,
        )
        os.replace(tmp / "w", target)
        shutil.rmtree(tmp)
    return target


@pytest.fixture(scope="module")
def docker(tmp_path_factory):
    """A private dockerd: no bridge, no iptables, its own data-root (cached), exec-root and socket."""
    if os.environ.get("MLOPS_DOCKER_TESTS") == "0":
        pytest.skip("MLOPS_DOCKER_TESTS=0: docker image tests disabled on this machine")
    missing = [t for t in ("dockerd", "docker", "debootstrap") if shutil.which(t) is None]
    assert not missing, f"{missing} not found: apt-get install -y docker.io debootstrap"
    assert os.geteuid() == 0, "dockerd and debootstrap need root (or set MLOPS_DOCKER_TESTS=0)"
    with dockerd() as env:
        yield env


@contextlib.contextmanager
def dockerd() -> Iterator[dict[str, str]]:
    """Run a private dockerd (no bridge, no iptables; data-root cached in $MLOPS_DOCKER_CACHE) while in
    the block; yields the environment (DOCKER_HOST) for `docker` commands. Also used by
    benchmarks/serving/startup.py."""
    CACHE.mkdir(parents=True, exist_ok=True)
    run_dir = Path(tempfile.mkdtemp(prefix="mld-", dir="/tmp"))  # short: unix socket paths are limited
    sock = run_dir / "docker.sock"
    log = open(run_dir / "dockerd.log", "wb")
    proc = subprocess.Popen(
        [
            "dockerd",
            "--bridge=none",
            "--iptables=false",
            "--ip-masq=false",
            "--data-root",
            str(CACHE / "docker"),
            "--exec-root",
            str(run_dir / "exec"),
            "--pidfile",
            str(run_dir / "dockerd.pid"),
            "-H",
            f"unix://{sock}",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        env = {**os.environ, "DOCKER_HOST": f"unix://{sock}"}
        deadline = time.monotonic() + 60
        while subprocess.run(["docker", "info"], env=env, capture_output=True).returncode != 0:
            alive = proc.poll() is None and time.monotonic() < deadline
            assert alive, (run_dir / "dockerd.log").read_text()[-3000:]
            time.sleep(0.5)
        yield env
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        subprocess.run(["umount", str(run_dir / "exec" / "netns" / "default")], capture_output=True)
        shutil.rmtree(run_dir, ignore_errors=True)


def build_image(
    docker: dict, ctx: Path, dockerfile: str, tag: str, wheelhouse: Path, root: Path = REPO
) -> str:
    """Build `dockerfile` offline as `tag`: debootstrap base + wheelhouse in the clean build context `ctx`
    (also used by the deploy rehearsal, tests/e2e/test_rehearse.py). The sources come from `root` (the
    checkout; the start-up benchmark passes an older revision's files)."""
    base = _slim_base_tarball()
    base_tag = f"mlops-base:bookworm-slim-{base.stem.rsplit('-', 1)[1]}"
    if subprocess.run(["docker", "image", "inspect", base_tag], env=docker, capture_output=True).returncode:
        _sh("docker", "import", str(base), base_tag, env=docker)
    for name in (dockerfile, ".dockerignore", "pyproject.toml", "README.md", "params.yaml"):
        shutil.copy(root / name, ctx / name)
    shutil.copytree(root / "src", ctx / "src", ignore=shutil.ignore_patterns("__pycache__", "*.egg-info"))
    shutil.copytree(wheelhouse, ctx / "wheelhouse")
    _sh(
        "docker",
        "build",
        "--network",
        "host",
        "-f",
        str(ctx / dockerfile),
        "--build-arg",
        f"BASE_IMAGE={base_tag}",
        "--build-arg",
        "WHEELS=wheelhouse",
        "-t",
        tag,
        str(ctx),
        env=docker,
        timeout=1800,
    )
    return tag


@pytest.fixture(scope="module")
def image(docker, tmp_path_factory) -> str:
    """Build the image offline: debootstrap base + wheelhouse in a clean build context."""
    ctx = tmp_path_factory.mktemp("docker-context")
    tag = build_image(docker, ctx, "Dockerfile", "mlops-serve:test", _wheelhouse())
    size = int(_sh("docker", "image", "inspect", "-f", "{{.Size}}", tag, env=docker))
    history = _sh("docker", "history", "--no-trunc", "--format", "{{.Size}}\t{{.CreatedBy}}", tag, env=docker)
    layers = [
        {"bytes": _bytes(line.split("\t", 1)[0]), "created_by": line.split("\t", 1)[1][:160]}
        for line in history.splitlines()
        if _bytes(line.split("\t", 1)[0]) > 0
    ]
    base = int(_sh("docker", "image", "inspect", "-f", "{{.Size}}", _base_tag(docker), env=docker))
    print(f"\nimage {tag}: {size / 1e6:.0f} MB (base {base / 1e6:.0f} MB)")
    _record(image=tag, bytes=size, base_bytes=base, layers=layers)
    return tag


def _bytes(text: str) -> int:
    """`docker history` sizes ("12.3MB", "0B") in bytes."""
    m = re.fullmatch(r"([\d.]+)\s*([kKMG]?B)", text.strip())
    return (
        round(float(m.group(1)) * {"B": 1, "kB": 1e3, "KB": 1e3, "MB": 1e6, "GB": 1e9}[m.group(2)])
        if m
        else 0
    )


def _base_tag(docker: dict) -> str:
    return f"mlops-base:bookworm-slim-{_slim_base_tarball().stem.rsplit('-', 1)[1]}"


def _record(**facts) -> None:
    """Merge measured facts (image size, container cold start) into $MLOPS_DOCKER_CACHE/last-image.json."""
    path = CACHE / "last-image.json"
    known = json.loads(path.read_text()) if path.is_file() else {}
    path.write_text(json.dumps({**known, **facts}, indent=1))


def test_image_has_no_compiler(docker, image):
    out = _sh(
        "docker",
        "run",
        "--rm",
        "--network",
        "host",
        "--entrypoint",
        "python3",
        image,
        "-c",
        "import shutil; print([c for c in ('gcc', 'cc', 'c++', 'clang', 'make') if shutil.which(c)])",
        env=docker,
    )
    assert out.strip() == "[]"


def test_image_has_no_torch_and_serving_imports_no_torch(docker, image):
    """The serving image carries ONNX Runtime, not torch or pydantic (`mlops serve` validates its params
    section with msgspec); importing the whole serving path loads neither."""
    script = (
        "import importlib.util as u, json, sys; import mlops.cli, mlops.serve.server, mlops.scorer; "
        "from mlops.serve import worker; worker.preload('onnx'); "
        "print(json.dumps({n: bool(u.find_spec(n)) for n in ('torch', 'safetensors', 'onnxruntime', 'mlflow', 'pydantic')}"
        " | {'imported_torch': 'torch' in sys.modules}))"
    )
    out = _sh(
        "docker",
        "run",
        "--rm",
        "--network",
        "host",
        "--entrypoint",
        "python3",
        image,
        "-c",
        script,
        env=docker,
    )
    found = json.loads(out.strip().splitlines()[-1])
    assert found == {
        "torch": False,
        "safetensors": False,
        "onnxruntime": True,
        "mlflow": False,
        "pydantic": False,
        "imported_torch": False,
    }


def _world_readable_copy(model_dir: Path) -> Path:
    """The model copied where uid 10001 can read it (pytest's temp dirs are private to root)."""
    target = Path(tempfile.mkdtemp(prefix="mlops-models-"))
    target.chmod(0o755)
    for f in model_dir.iterdir():
        shutil.copy(f, target / f.name)
    return target


def test_image_serves_read_only_as_non_root(docker, image, model_dir, spec, rows):
    mounted = _world_readable_copy(model_dir)
    port = free_port()
    name = f"mlops-serve-test-{port}"
    subprocess.run(["docker", "rm", "-f", name], env=docker, capture_output=True)
    started = time.monotonic()
    _sh(
        "docker",
        "run",
        "-d",
        "--name",
        name,
        "--read-only",
        "--tmpfs",
        "/tmp",
        "--user",
        "10001",
        "--network",
        "host",
        "-v",
        f"{mounted}:/models:ro",
        "-e",
        f"MLOPS_SERVE_PORT={port}",
        "--health-interval",
        "1s",
        "--health-start-period",
        "30s",
        image,
        "serve",
        "--model-dir",
        "/models",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        env=docker,
    )
    try:
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + 90
        while True:
            try:
                if httpx.get(f"{url}/v2/health/ready", timeout=2).status_code == 200:
                    _record(container_start_to_ready_s=round(time.monotonic() - started, 3))
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() - started > 5:  # `docker inspect` costs ~50 ms: poll fast at first
                running = _sh("docker", "inspect", "-f", "{{.State.Running}}", name, env=docker).strip()
                if running != "true" or time.monotonic() > deadline:
                    logs = subprocess.run(
                        ["docker", "logs", name], env=docker, capture_output=True, text=True
                    )
                    raise AssertionError(
                        f"container not ready (running={running}): {logs.stdout}{logs.stderr}"
                    )
            time.sleep(0.01)
        chosen = rows[:2]
        resp = httpx.post(f"{url}/v2/models/{spec.name}/infer", json=infer_body(spec, chosen))
        assert resp.status_code == 200, resp.text
        got = resp.json()["outputs"][0]["data"]
        columns = {k: [np.nan if r[k] is None else r[k] for r in chosen] for k in spec.names}
        np.testing.assert_allclose(got, scorer.load_onnx(model_dir).predict_proba(columns), rtol=1e-6)
        torch_proba = model_mod.load(model_dir).predict_proba(columns)
        np.testing.assert_allclose(got, torch_proba, rtol=0, atol=1e-4)  # gate.onnx_parity.max_abs_diff
        for _ in range(200):  # warm, then measure the memory of each container process
            httpx.post(f"{url}/v2/models/{spec.name}/infer", json=infer_body(spec, chosen))
        _record(container_memory=_container_memory(docker, name))
        bad = httpx.post(f"{url}/v2/models/{spec.name}/infer", json={"inputs": []})
        assert bad.status_code == 400 and "missing" in bad.json()["error"]
        metrics = httpx.get(f"{url}/metrics").text
        infer_ok = r'mlops_serve_requests_total\{[^}]*route="/v2/models/\{name\}/infer"[^}]*status="200"'
        assert re.search(infer_ok, metrics)
        assert "mlops_serve_model_info{" in metrics
        user = _sh(
            "docker", "inspect", "-f", "{{.Config.User}} {{.HostConfig.ReadonlyRootfs}}", name, env=docker
        )
        assert user.split() == ["10001", "true"]
        deadline = time.monotonic() + 30
        health = ("docker", "inspect", "-f", "{{.State.Health.Status}}", name)
        while _sh(*health, env=docker).strip() != "healthy":
            assert time.monotonic() < deadline, "HEALTHCHECK never reported healthy"
            time.sleep(0.5)
        _sh("docker", "stop", "-t", "20", name, env=docker)
        assert _sh("docker", "inspect", "-f", "{{.State.ExitCode}}", name, env=docker).strip() == "0"
    finally:
        subprocess.run(["docker", "rm", "-f", name], env=docker, capture_output=True)
        shutil.rmtree(mounted, ignore_errors=True)


def _container_memory(docker: dict, name: str) -> list[dict]:
    """RSS and PSS (MB) of each process of a running container, read from the host's /proc."""
    pids = _sh("docker", "top", name, "-eo", "pid,args", env=docker).splitlines()[1:]
    out = []
    for line in pids:
        pid, args = line.strip().split(None, 1)
        rollup = Path(f"/proc/{pid}/smaps_rollup").read_text()
        kb = {k: int(v) for k, v in re.findall(r"^(Rss|Pss):\s+(\d+) kB", rollup, re.M)}
        out.append({"pid": int(pid), "args": args[:80], "rss_mb": kb["Rss"] / 1e3, "pss_mb": kb["Pss"] / 1e3})
    return out
