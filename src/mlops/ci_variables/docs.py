"""docs: the reference page docs/reference/ci-variables.md, generated from the contract."""

from __future__ import annotations

from collections.abc import Iterable

from mlops.ci_variables import (
    CONFIG,
    CREDENTIAL,
    PIPELINES,
    PROJECT,
    SYSTEM_NAMES,
    SYSTEMS,
    TARGETS,
    VARIABLES,
    Need,
    Variable,
    describe_supply,
)

HEADER = """# CI variables

<!-- generated from src/mlops/ci_variables/ by `make ci-variables`: do not edit -->

Every environment variable the CI jobs (`make ci-*`) read, from the one contract in
`src/mlops/ci_variables/__init__.py`. Under `CI=true` each job first checks the variables it needs and
stops with exit 2 naming each missing one, before it does any work; outside CI the targets run on the
embedded defaults (local MLflow store, local DVC remote, images built but not pushed).
`tests/ci/test_ci_variables.py` fails when a CI file does not pass a variable its job reads.
`–`: not passed on that system (the default applies, or the variable does not concern it).
"""


def _needs(var: Variable) -> str:
    """`need: targets` groups, most demanding first."""
    groups: dict[Need, list[str]] = {}
    for target, need in var.needs.items():
        groups.setdefault(need, []).append(f"`{target}`")
    order = list(Need)
    return "<br>".join(
        f"{need.value}: {', '.join(targets)}"
        for need, targets in sorted(groups.items(), key=lambda g: order.index(g[0]))
    )


def _row(var: Variable) -> str:
    cells = []
    for system in SYSTEMS:
        cell = describe_supply(system, var.supply(system))
        if var.supply(system) is not None and var.pipelines != PIPELINES:
            cell += f" ({', '.join(p.replace('_', ' ') + 's' for p in var.pipelines)} only)"
        cells.append(cell)
    name = f"`{var.name}`" + (" (secret)" if var.secret else "")
    return "| " + " | ".join(c.replace("|", "\\|") for c in (name, _needs(var), var.purpose, *cells)) + " |"


def _listed(items: Iterable[str]) -> str:
    return ", ".join(f"`{i}`" for i in sorted(set(items))) or "none"


def _supplied(system: str, prefix: str) -> list[str]:
    """What follows `prefix` in this system's supplies: secret names, credential ids."""
    hows = [v.supply(system) or "" for v in VARIABLES]
    return [h.removeprefix(prefix) for h in hows if h.startswith(prefix)]


def _by(system: str, how: str) -> list[str]:
    return [v.name for v in VARIABLES if v.supply(system) == how]


def markdown() -> str:
    """The page: every variable; what each job requires; what to configure on each CI system."""
    lines = [
        HEADER,
        "| variable | jobs (`make` targets) | what for | "
        + " | ".join(SYSTEM_NAMES[s] for s in SYSTEMS)
        + " |",
        "|---|---|---|---|---|---|",
        *(_row(v) for v in VARIABLES),
        "",
        "## Required, per job (under `CI=true`)",
        "",
    ]
    for target in TARGETS:
        groups: dict[Need, list[str]] = {}
        for var in VARIABLES:
            need = var.needs.get(target, Need.OPTIONAL)
            if need is not Need.OPTIONAL:
                groups.setdefault(need, []).append(var.name)
        said = "; ".join(f"{need.value}: {_listed(names)}" for need, names in groups.items())
        lines.append(f"- `{target}`: {said or 'nothing'}")
    github_secrets = [s for s in _supplied("github", "secrets.") if s != "GITHUB_TOKEN"]
    lines += [
        "",
        "## What to configure",
        "",
        f"- **GitHub Actions**: repository secrets {_listed(github_secrets)} and `MLOPS_BOT_TOKEN` (a "
        "fine-grained token or GitHub App token, contents and pull-requests write: the retrain and production "
        "pull requests opened with the job's own `GITHUB_TOKEN` start no workflows, and promote pushes the "
        "staging record with it: a protected `main` must let it push, or mark staging `protected: true` in "
        "deploy/promotion.yaml so staging promotions arrive as pull requests too); repository variable "
        f"{_listed(_supplied('github', 'vars.'))}. The jobs' `GITHUB_TOKEN` logs in to the registry and "
        "posts the review comment.",
        f"- **GitLab CI**: project (or group) CI/CD variables {_listed(_by('gitlab', PROJECT))} (mask the "
        "secrets). The container registry and its job credentials are GitLab's own.",
        f"- **Jenkins**: credentials {_listed(_supplied('jenkins', CREDENTIAL))}; in the global or job "
        f"configuration {_listed(_by('jenkins', CONFIG))}.",
        "",
    ]
    return "\n".join(lines)
