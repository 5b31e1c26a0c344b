"""The template's layout promises to a forking team: parts it may delete leave `make test` green."""

from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from conftest import copy_repository


# slow: copies the repository and starts two pytest processes in it (~20 s)
@pytest.mark.slow
def test_a_fork_without_benchmarks_collects_every_test_and_its_docs_checks_pass(tmp_path):
    """benchmarks/ holds its own tests (pyproject.toml `testpaths`) and nothing under tests/ needs it: a
    team that deletes the folder collects the rest of the suite, and the docs' path check passes."""
    repo = copy_repository(tmp_path / "repo")
    shutil.rmtree(repo / "benchmarks")

    def pytest_in_copy(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(
            [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", *args],
            cwd=repo,
            capture_output=True,
            text=True,
            timeout=600,
        )

    collected = pytest_in_copy("--collect-only", "-q")
    assert collected.returncode == 0, collected.stdout[-3000:] + collected.stderr[-2000:]
    ids = [line for line in collected.stdout.splitlines() if "::" in line]
    assert len(ids) > 500 and not any(i.startswith("benchmarks/") for i in ids)
    docs = pytest_in_copy("tests/test_docs.py", "-q", "-k", "path_named or make_target or mlops_command")
    assert docs.returncode == 0, docs.stdout[-3000:]
