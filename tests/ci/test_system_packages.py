"""tools/system-packages.sh: the one list of Debian packages `make test` and .ci/run need.

On a machine where something is missing and it cannot install (here: `--check`, or a PATH without the
tools), it must stop at once with the exact install command instead of failing minutes into the suite.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from conftest import REPO

SCRIPT = REPO / "tools/system-packages.sh"


def _bare_path(tmp_path: Path) -> str:
    """A PATH holding only the coreutils the script itself uses: every checked tool looks missing."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for name in ("id",):
        os.symlink(shutil.which(name), bin_dir / name)
    return str(bin_dir)


def _run(tmp_path: Path, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        ["/bin/bash", str(SCRIPT), "--check"],
        env={"PATH": _bare_path(tmp_path), **env},
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_missing_packages_stop_with_the_install_command(tmp_path):
    result = _run(tmp_path)
    assert result.returncode == 3, result.stderr
    assert "missing Debian packages:" in result.stderr
    for package in ("rsync", "git", "make", "docker.io", "debootstrap", "npm"):
        assert package in result.stderr
    assert "apt-get install -y --no-install-recommends" in result.stderr


def test_docker_packages_left_out_when_docker_tests_are_off(tmp_path):
    result = _run(tmp_path, MLOPS_DOCKER_TESTS="0")
    assert result.returncode == 3
    assert "rsync" in result.stderr
    install_line = next(line for line in result.stderr.splitlines() if "apt-get install" in line)
    assert "docker.io" not in install_line and "debootstrap" not in install_line


def test_this_machine_has_everything_the_suite_needs():
    """CI ran the script before the suite: every package is present now (so `make test` starts)."""
    result = subprocess.run(
        [str(SCRIPT), "--check"], capture_output=True, text=True, timeout=30, env=os.environ
    )
    assert result.returncode == 0, result.stderr
