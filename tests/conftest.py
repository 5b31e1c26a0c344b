"""Shared fixtures: isolated tool environments, the demo pipeline run once per session, helpers.

Everything a test starts listens on 127.0.0.1 and lives in a temp dir; nothing leaks between runs.
"""

from __future__ import annotations

import os
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from mlops import numerics

# the pipeline's numeric code paths (mlops.numerics), set before pytest or a test loads numpy or torch, so
# stages run in this process write the same bytes as the `mlops` commands tests start
numerics.pin()

import pytest  # noqa: E402
import yaml  # noqa: E402

from mlops import cli  # noqa: E402
from mlops.config import load_params  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
# Template tests run on their own fixture params (the demo pipeline), never on the shipped params.yaml,
# which belongs to the team that adopts the template (project tests in tests/project/ read that one).
FIXTURE_PARAMS = REPO / "tests/fixtures/demo/params.yaml"
DVC_STAGES = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]


def pytest_collection_modifyitems(items):
    """Mark every test that uses a Docker engine fixture `docker` (the CI job test-docker runs them)."""
    for item in items:
        if any(name == "docker" or name.startswith("docker_") for name in item.fixturenames):
            item.add_marker(pytest.mark.docker)


@pytest.fixture(scope="session", autouse=True)
def isolated_env(tmp_path_factory: pytest.TempPathFactory):
    """Point DVC, MLflow and git at temp locations so tests never touch the user's files."""
    root = tmp_path_factory.mktemp("env")
    saved = dict(os.environ)
    os.environ.update(
        {
            "DVC_NO_ANALYTICS": "1",
            "DVC_SITE_CACHE_DIR": str(root / "dvc-site"),
            "DVC_GLOBAL_CONFIG_DIR": str(root / "dvc-global"),
            "MLFLOW_TRACKING_URI": f"sqlite:///{root / 'mlflow.db'}",
            "GIT_AUTHOR_NAME": "test",
            "GIT_AUTHOR_EMAIL": "test@example.invalid",
            "GIT_COMMITTER_NAME": "test",
            "GIT_COMMITTER_EMAIL": "test@example.invalid",
        }
    )
    yield root
    os.environ.clear()
    os.environ.update(saved)


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory):
    """A real `mlflow server` on 127.0.0.1 (SQLite backend, local artifacts); yields its URL."""
    root = tmp_path_factory.mktemp("mlflow-server")
    port = free_port()
    env = {**os.environ, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    env.pop("MLFLOW_TRACKING_URI", None)
    log = open(root / "server.log", "wb")
    proc = subprocess.Popen(
        [
            str(Path(sys.executable).parent / "mlflow"),
            "server",
            "--backend-store-uri",
            f"sqlite:///{root / 'mlflow.db'}",
            "--artifacts-destination",
            str(root / "artifacts"),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            "1",
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
        cwd=root,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            if proc.poll() is not None:
                raise RuntimeError(
                    f"mlflow server exited {proc.returncode}: {(root / 'server.log').read_text()[-2000:]}"
                )
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as resp:
                    if resp.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(
                    f"mlflow server not healthy after 120 s: {(root / 'server.log').read_text()[-2000:]}"
                )
            time.sleep(0.5)
        yield url
    finally:
        try:
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait(timeout=30)
        except ProcessLookupError:
            pass
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)
        log.close()


@pytest.fixture(scope="session")
def params():
    """The template tests' fixture params (the demo pipeline), typed."""
    return load_params(FIXTURE_PARAMS)


@dataclass(frozen=True)
class Workspace:
    """Paths of one pipeline run (same layout as dvc.yaml)."""

    root: Path

    @property
    def params(self) -> Path:
        return self.root / "params.yaml"

    @property
    def raw(self) -> Path:
        return self.root / "data/raw/data.parquet"

    @property
    def validation(self) -> Path:
        return self.root / "reports/validation.json"

    @property
    def processed(self) -> Path:
        return self.root / "data/processed"

    @property
    def models(self) -> Path:
        return self.root / "models"

    @property
    def metrics(self) -> Path:
        return self.root / "reports/metrics.json"

    @property
    def plots(self) -> Path:
        return self.root / "reports/plots"

    def mlops(self, *args: str) -> int:
        """Run one `mlops` command in-process against this workspace's params; return the exit code."""
        return cli.main(["--params", str(self.params), *args])

    def stage_args(self, stage: str, **overrides: str | Path) -> list[str]:
        """`mlops` arguments of a dvc.yaml stage with its paths under this workspace's root.

        Args:
            stage: the stage name in dvc.yaml (the command line is taken from there: one source).
            overrides: option -> value replacements, e.g. out=path for `--out`.
        """
        words = shlex.split(DVC_STAGES[stage]["cmd"])
        assert words[:2] == ["mlops", stage], f"dvc.yaml {stage}: expected `mlops {stage} ...`"
        args = [stage]
        for option, value in zip(words[2::2], words[3::2], strict=True):
            value = overrides.get(option.removeprefix("--").replace("-", "_"), self.root / value)
            args += [option, str(value)]
        return args

    def run_all(self) -> None:
        """Run ingest -> evaluate as dvc.yaml declares them, asserting each stage succeeds."""
        for stage in ("ingest", "validate", "featurize", "train", "evaluate"):
            assert self.mlops(*self.stage_args(stage)) == 0, f"mlops {stage} failed"


def new_workspace(root: Path) -> Workspace:
    """A fresh workspace with a copy of the fixture params (the demo pipeline)."""
    root.mkdir(parents=True, exist_ok=True)
    shutil.copy(FIXTURE_PARAMS, root / "params.yaml")
    return Workspace(root)


@pytest.fixture(scope="session")
def pipeline(tmp_path_factory: pytest.TempPathFactory) -> Workspace:
    """The demo pipeline run once for the session (read-only for tests: copy before changing)."""
    ws = new_workspace(tmp_path_factory.mktemp("pipeline"))
    ws.run_all()
    return ws


@pytest.fixture(scope="session")
def task_pipeline(tmp_path_factory: pytest.TempPathFactory):
    """`task_pipeline(kind)`: the pipeline (ingest -> evaluate) run once per session on the public table of
    another task (`multiclass`: modeldata/hpc_data, `regression`: ggplot2/diamonds; tests/task_tables.py),
    set up by editing only the fixture params. Read-only for tests: copy before changing."""
    import task_tables
    import yaml

    from mlops.params_io import read_yaml

    done: dict[str, Workspace] = {}

    def get(kind: str) -> Workspace:
        if kind not in done:
            ws = new_workspace(tmp_path_factory.mktemp(f"pipeline-{kind}"))
            data = read_yaml(ws.params)
            task_tables.EDITS[kind](data)
            ws.params.write_text(yaml.safe_dump(data, sort_keys=False))
            ws.run_all()
            done[kind] = ws
        return done[kind]

    return get


@pytest.fixture
def workspace(tmp_path: Path) -> Workspace:
    """An empty workspace with the fixture params (the demo pipeline)."""
    return new_workspace(tmp_path / "ws")


CALLER_ONLY = ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES", "PYTEST_ARGS", "PYTEST_ADDOPTS")
"""What a caller's make and pytest put in the environment for themselves: `make test PYTEST_ARGS=...`
travels to every nested make through MAKEFLAGS, so a CI job run inside a test (`make ci-verify` under
gitlab-ci-local) would take the caller's test selection instead of its own and run this test again."""


def nested_ci_env(environ: dict[str, str] | None = None) -> dict[str, str]:
    """The environment for a CI run started by a test: the caller's make/pytest selection
    (CALLER_ONLY) and an outer gitlab-ci-local's options (GCL_*) removed."""
    source = dict(os.environ if environ is None else environ)
    return {k: v for k, v in source.items() if not k.startswith("GCL_") and k not in CALLER_ONLY}


def free_port() -> int:
    """A free TCP port on 127.0.0.1."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run(cmd: list[str], cwd: Path, env: dict[str, str] | None = None, timeout: int = 600):
    """Run a command, capturing output; the caller asserts on the result."""
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def tool(name: str) -> str:
    """Path of a pinned tool: the venv first (Python tools), then tools/node_modules/.bin (Node tools)."""
    import sys

    for folder in (Path(sys.executable).parent, REPO / "tools/node_modules/.bin"):
        if (folder / name).exists():
            return str(folder / name)
    found = shutil.which(name)
    assert found, (
        f"{name} not installed: run `make install-dev` (pins in pyproject.toml / tools/package.json)"
    )
    return found


def copy_repository(dest: Path) -> Path:
    """Copy this repository's files (tracked and new, not ignored) into `dest` and commit them on `main`
    in a fresh git repository: what a CI runner's clone of the current change would hold."""
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split("\0")
    for name in filter(None, listed):
        src = REPO / name
        if src.is_symlink():  # a clone keeps links as links (monitoring/ links into the chart)
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            (dest / name).symlink_to(os.readlink(src))
        elif src.is_file():
            (dest / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dest / name)
    for cmd in (
        ["git", "init", "-q", "-b", "main"],
        ["git", "add", "-A"],
        ["git", "commit", "-q", "-m", "copy"],
    ):
        subprocess.run(cmd, cwd=dest, check=True, capture_output=True)
    return dest
