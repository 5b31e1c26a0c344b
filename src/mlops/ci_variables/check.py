"""check: the variables a `ci-*` make target needs in this job, checked before it does any work.

Under `CI=true` a missing one is exit 2 with one line per variable: its name, why it is needed and where
this CI system supplies it from. Outside CI nothing is checked: the targets run on the embedded defaults.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mlops.ci_variables import (
    BY_NAME,
    DOC,
    PRODUCTION_RECORD,
    SYSTEM_NAMES,
    SYSTEMS,
    TARGETS,
    VARIABLES,
    Need,
    describe_supply,
)


def current_system(env: Mapping[str, str]) -> str | None:
    """The CI system running this job (github, gitlab, jenkins), or None."""
    if env.get("GITHUB_ACTIONS") == "true":
        return "github"
    if env.get("GITLAB_CI") == "true":
        return "gitlab"
    if env.get("JENKINS_URL"):
        return "jenkins"
    return None


def _ingest(repo: Path) -> dict[str, Any]:
    """params.yaml's `ingest` section, read as DVC and mlops read it (YAML 1.2)."""
    from mlops.params_io import read_yaml  # ruamel.yaml: only ci-train and ci-retrain get here

    data = read_yaml(repo / "params.yaml")
    ingest = data.get("ingest") if isinstance(data, dict) else None
    return ingest if isinstance(ingest, dict) else {}


def applies(need: Need, env: Mapping[str, str], repo: Path) -> bool:
    """Whether `need` makes a variable required in this environment and checkout."""
    if need is Need.REQUIRED:
        return True
    if need is Need.OPTIONAL:
        return False
    if need is Need.PRODUCTION:
        return (repo / PRODUCTION_RECORD).is_file()
    if need is Need.SQL:
        return _ingest(repo).get("source") == "sql"
    from mlops.review_comment import forge_kind  # the one forge detection (standard library only)

    kind = forge_kind(env)
    return {Need.GITHUB: kind == "github", Need.GITLAB: kind == "gitlab", Need.NO_FORGE: kind == ""}[need]


def missing(target: str, env: Mapping[str, str], repo: Path = Path(".")) -> list[str]:
    """One message per variable `target` needs here and lacks (empty: nothing is missing).

    Args:
        target: a `ci-*` make target (TARGETS).
        env: the job's environment.
        repo: the checkout (params.yaml, the production record).

    Raises:
        KeyError: an unknown target.
    """
    if target not in TARGETS:
        raise KeyError(target)
    system = current_system(env)
    problems = []
    for var in VARIABLES:
        need = var.needs.get(target)
        if need is None or env.get(var.name):
            continue
        if applies(need, env, repo):
            where = "; ".join(
                f"{SYSTEM_NAMES[s]}: {describe_supply(s, var.supply(s))}"
                for s in ([system] if system else SYSTEMS)
            )
            problems.append(f"{var.name} is not set ({need.value}): {var.purpose} [{where}]")
        elif var.pair and env.get(var.pair):
            problems.append(f"{var.name} is not set, but {var.pair} is: set both or neither")
    sql = BY_NAME["MLOPS_SQL_URL"]
    if sql.needs.get(target) is Need.SQL and applies(Need.SQL, env, repo):
        named = (_ingest(repo).get("sql") or {}).get("url_env", sql.name)
        if named != sql.name:  # params.yaml may rename it; the CI files pass the contract's name
            problems.append(
                f"params.yaml ingest.sql.url_env is {named!r}, but the CI files pass {sql.name}: rename it "
                "in src/mlops/ci_variables and the CI files too"
            )
    return problems


def check(target: str, env: Mapping[str, str] = os.environ, repo: Path = Path(".")) -> int:
    """0 outside CI or when nothing is missing; else 2, after naming each problem on stderr."""
    if env.get("CI") != "true":
        return 0
    try:
        problems = missing(target, env, repo)
    except KeyError:
        print(f"{target}: error: not a CI job target ({', '.join(TARGETS)})", file=sys.stderr)
        return 2
    except Exception as e:  # noqa: BLE001 - e.g. an unreadable params.yaml: named, exit 2
        print(f"{target}: error: cannot check the CI variables: {e}", file=sys.stderr)
        return 2
    for problem in problems:
        print(f"{target}: error: {problem}", file=sys.stderr)
    if problems:
        print(f"{target}: stopped before doing anything; every CI variable: {DOC}", file=sys.stderr)
        return 2
    return 0
