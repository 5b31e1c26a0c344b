"""The GitLab merge-request pipeline executed in the image the CI file declares.

The CI image (Dockerfile.ci) is built by a private dockerd (no bridge network, `--network host`) from a
debootstrapped Debian base: tools/system-packages.sh installs the Debian packages from the host's Debian
mirror as in any build, while Python and Node come from a host-built wheelhouse of every pinned
dependency and from tools/node_modules (pip and npm cannot verify TLS inside a build on this machine). It is tagged exactly as `.gitlab-ci.yml`'s
`default: image:` names it (`$CI_REGISTRY_IMAGE/mlops-ci:<hash>`), and gitlab-ci-local's Docker executor
runs the jobs in it (`--network host`, the image as helper image, no registry pulls). Checked:

- `make ci-verify` (lint and the fast tests) passes inside the image, offline;
- the merge-request pipeline's train and report jobs pass in it; with an unreachable gate threshold,
  train fails, the report job still runs and names the failed rule, and the pipeline fails.

What does not run here: the `ci-image` job (it builds with the runner's own Docker engine, on a shell
runner), and `services:` (gitlab-ci-local cannot attach services with `--network host`, and a bridge
network is not allowed on these machines); the test-e2e and test-docker jobs run the rest of the suite,
which this repository's own CI runs directly.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
import yaml
from serve.test_docker import CACHE, _base_tarball, _sh, docker  # noqa: F401 - docker is a fixture
from test_gitlab_pipeline import SHAPES, new_repo, unreachable  # the shell-executor test's shape, copy, bound

from conftest import REPO, nested_ci_env, tool

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
REGISTRY = "registry.invalid/mlops"  # CI_REGISTRY_IMAGE for the run: the tag exists only locally


def _ci_wheelhouse() -> Path:
    """Wheels of every dependency of pyproject.toml (dev tools included), constrained to this venv."""
    import tomllib

    text = (REPO / "pyproject.toml").read_text()
    freeze = _sh(sys.executable, "-m", "pip", "freeze", "--exclude-editable")
    tools = [
        REPO / "tests/serve/oip_clients/kserve-requirements.txt",
        REPO / "tests/orchestrate/kfp-requirements.txt",
    ]
    kserve = "".join(path.read_text() for path in tools)
    key = hashlib.sha256(f"ci|{text}|{freeze}|{kserve}".encode()).hexdigest()[:16]
    target = CACHE / f"ci-wheelhouse-{key}"
    if not target.exists():
        tmp = Path(tempfile.mkdtemp(prefix="ci-wheelhouse-", dir=CACHE))
        (tmp / "constraints.txt").write_text(
            "\n".join(line for line in freeze.splitlines() if "==" in line and not line.startswith("torch="))
        )
        project = tomllib.loads(text)["project"]
        reqs = project["dependencies"] + project["optional-dependencies"]["dev"]
        _sh(
            sys.executable,
            "-m",
            "pip",
            "wheel",  # not `download --only-binary`: some dependencies (hydra's antlr4 runtime) are sdists
            "--quiet",
            "--wheel-dir",
            str(tmp / "w"),
            "--find-links",
            os.environ.get("MLOPS_TORCH_WHEEL_DIR", "/opt/wheels"),
            "-c",
            str(tmp / "constraints.txt"),
            *reqs,
            "setuptools>=68",
            "wheel",
            timeout=1800,
        )
        for requirements in tools:  # the KServe client's and KFP compiler's venvs (their own pins)
            _sh(
                sys.executable,
                "-m",
                "pip",
                "wheel",
                "--quiet",
                "--wheel-dir",
                str(tmp / "w"),
                "-r",
                str(requirements),
                timeout=1800,
            )
        os.replace(tmp / "w", target)
        shutil.rmtree(tmp)
    return target


def _declared_image() -> str:
    """`.gitlab-ci.yml`'s default image, with CI_REGISTRY_IMAGE expanded as in the run below."""
    declared = yaml.safe_load((REPO / ".gitlab-ci.yml").read_text())["default"]["image"]
    return declared.replace("$CI_REGISTRY_IMAGE", REGISTRY)


@pytest.fixture(scope="module")
def ci_image(docker, tmp_path_factory) -> str:  # noqa: F811
    """Build Dockerfile.ci offline, tagged as the CI file declares it."""
    tag = _declared_image()
    if subprocess.run(["docker", "image", "inspect", tag], env=docker, capture_output=True).returncode == 0:
        return tag
    base = _base_tarball()  # the serving test's debootstrapped Debian (python3, venv, CA certificates)
    base_tag = f"mlops-base:bookworm-{base.stem.rsplit('-', 1)[1]}"
    if subprocess.run(["docker", "image", "inspect", base_tag], env=docker, capture_output=True).returncode:
        _sh("docker", "import", str(base), base_tag, env=docker)
    ctx = tmp_path_factory.mktemp("ci-image-context")
    shutil.copy(REPO / "Dockerfile.ci", ctx / "Dockerfile.ci")
    shutil.copy(REPO / "pyproject.toml", ctx / "pyproject.toml")
    (ctx / "tools").mkdir()
    for name in ("package.json", "package-lock.json", "system-packages.sh"):
        shutil.copy2(REPO / "tools" / name, ctx / "tools" / name)
    (ctx / "tests/serve/oip_clients").mkdir(parents=True)
    for name in ("kserve-requirements.txt", "toolenv.py"):
        shutil.copy2(REPO / "tests/serve/oip_clients" / name, ctx / "tests/serve/oip_clients" / name)
    (ctx / "tests/orchestrate").mkdir(parents=True)  # the KFP compiler's venv, prebuilt like KServe's
    shutil.copy2(
        REPO / "tests/orchestrate/kfp-requirements.txt", ctx / "tests/orchestrate/kfp-requirements.txt"
    )
    node_modules = REPO / "tools/node_modules"
    assert (node_modules / ".bin/gitlab-ci-local").exists(), "run `make install-dev` first (make test does)"
    shutil.copytree(node_modules, ctx / "node_modules", symlinks=True)
    shutil.copytree(_ci_wheelhouse(), ctx / "wheelhouse")
    _sh(
        "docker",
        "build",
        "--network",
        "host",
        "-f",
        str(ctx / "Dockerfile.ci"),
        "--build-arg",
        f"BASE_IMAGE={base_tag}",
        "--build-arg",
        "WHEELS=wheelhouse",
        "--build-arg",
        "NODE_TOOLS=context",
        "-t",
        tag,
        str(ctx),
        env=docker,
        timeout=2400,
    )
    return tag


def _mounts() -> list[str]:
    """The OIP spec and CRD schema locations, when set (as .ci/run sets them), mounted read-only."""
    args: list[str] = []
    for var in ("OIP_SPEC_LOCATION", "MLOPS_CRD_SCHEMAS"):
        path = os.environ.get(var)
        if path and Path(path).is_dir():
            args += ["--volume", f"{path}:/mnt/{var.lower()}:ro", "--variable", f"{var}=/mnt/{var.lower()}"]
    return args


def gitlab_in_image(
    repo: Path, image: str, env: dict[str, str], jobs: list[str], timeout: int = 2400
) -> tuple[int, str, dict[str, str]]:
    """Run merge-request pipeline jobs with gitlab-ci-local's Docker executor in the declared image."""
    args = [
        tool("gitlab-ci-local"),
        "--helper-image",
        image,
        "--network",
        "host",
        "--variable",
        f"CI_REGISTRY_IMAGE={REGISTRY}",
        *SHAPES["merge_request"],  # the same merge-request shape as the shell-executor runs
        *_mounts(),
        *jobs,
    ]
    run_env = nested_ci_env(env)  # an outer run's options and the caller's make/pytest selection
    run_env["GCL_IGNORE_PREDEFINED_VARS"] = "CI_PIPELINE_SOURCE,CI_COMMIT_BRANCH,CI_REGISTRY_IMAGE"
    for var in ("MLFLOW_TRACKING_URI", "VENV", "VIRTUAL_ENV"):
        run_env.pop(var, None)
    proc = subprocess.run(args, cwd=repo, env=run_env, capture_output=True, text=True, timeout=timeout)
    log = proc.stdout + proc.stderr
    verdicts = dict((job, verdict) for verdict, job in re.findall(r"^\s*(PASS|FAIL)\s+(\S+)", log, re.M))
    return proc.returncode, log, verdicts


def test_the_ci_image_is_the_one_the_ci_file_declares():
    tag = subprocess.run(
        ["make", "-s", "--no-print-directory", "ci-image-tag"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert _declared_image() == f"{REGISTRY}/{tag}"


def test_merge_request_pipeline_runs_in_the_declared_image(ci_image, docker, tmp_path):  # noqa: F811
    repo = new_repo(tmp_path)
    code, log, verdicts = gitlab_in_image(repo, ci_image, docker, ["verify", "train", "report"])
    assert code == 0, log[-8000:]
    assert verdicts == {"verify": "PASS", "train": "PASS", "report": "PASS"}, log[-4000:]
    assert f"{ci_image}" in log  # the Docker executor used the declared image
    gate = json.loads((repo / "reports/gate.json").read_text())  # artifacts copied back
    assert gate["passed"] is True
    assert "Gate" in (repo / "reports/review/report.md").read_text()


def test_failed_gate_in_the_declared_image_still_reports(ci_image, docker, tmp_path):  # noqa: F811
    repo = new_repo(tmp_path, unreachable)
    code, log, verdicts = gitlab_in_image(repo, ci_image, docker, ["train", "report"])
    assert code != 0, log[-4000:]
    assert verdicts.get("train") == "FAIL" and verdicts.get("report") == "PASS", log[-4000:]
    report = (repo / "reports/review/report.md").read_text()
    assert "❌ failed" in report and "metrics.max.log_loss" in report
