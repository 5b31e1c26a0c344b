"""ci_variables: the one contract of the environment the CI jobs (`make ci-*`) read.

For every variable: the targets that read it and whether each needs it (required, optional, or required
under a condition), what it is for, whether it is a secret, and how each CI system supplies it. Everything
else derives from it, never copied by hand:

- `python -m mlops.ci_variables check <target>` (`check.py`): the first thing every `ci-*` make target
  does. Under `CI=true` it exits 2 naming each missing variable, before any work; elsewhere (a laptop) it
  does nothing and the targets run on the embedded defaults (local MLflow store, local DVC remote).
- `python -m mlops.ci_variables markdown` (`docs.py`): docs/reference/ci-variables.md (`make
  ci-variables`; a test fails when the committed page is stale).
- tests/ci/test_ci_variables.py: each CI file passes what its jobs' targets read.

Only the standard library at import time: the check runs before the job installs anything (the ci-image
job runs it with the runner's own python3).
"""

from __future__ import annotations

import enum
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

DOC = Path("docs/reference/ci-variables.md")
# deploy/envs/<env>/model.yaml (mlops.gitops.record; a test checks they agree: importing it costs pydantic)
PRODUCTION_RECORD = Path("deploy/envs/production/model.yaml")

TARGETS = (
    "ci-image-publish",
    "ci-verify",
    "ci-test-e2e",
    "ci-test-docker",
    "ci-train",
    "ci-retrain",
    "ci-report",
    "ci-release",
    "ci-promote",
)
SYSTEMS = ("github", "gitlab", "jenkins")
SYSTEM_NAMES = {"github": "GitHub Actions", "gitlab": "GitLab CI", "jenkins": "Jenkins"}
PIPELINES = ("merge_request", "main", "schedule", "retrain_request")


class Need(enum.Enum):
    """Whether a target needs a variable under CI=true; the value is how the docs say it."""

    REQUIRED = "required"
    OPTIONAL = "optional"
    GITHUB = "required when the forge is GitHub"
    GITLAB = "required when the forge is GitLab"
    NO_FORGE = "required where the CI is neither GitHub Actions nor GitLab CI (Jenkins)"
    SQL = "required when params.yaml `ingest.source` is `sql`"
    PRODUCTION = f"required when `{PRODUCTION_RECORD}` exists (champion comparison)"


# How a CI system supplies a variable (Variable.github/.gitlab/.jenkins). Any other string is what the
# CI file sets it to: a GitHub expression (`secrets.X`, `vars.X`, `github.actor`) in an `env:` block, a
# GitLab value (`$CI_REGISTRY_IMAGE`) in `variables:`, or, for Jenkins, `credential:<id>`: a binding of
# that credential in the stage's steps. None: not passed on that system (only for variables a target
# can do without: the default applies).
SYSTEM = "system"  # the CI system sets it itself (GITHUB_REPOSITORY, CI_PROJECT_ID, CI=true)
IMAGE = "image"  # the CI image (Dockerfile.ci `ENV`): every job that runs in it has it
PROJECT = "project"  # GitLab: a project (or group) CI/CD variable, which GitLab passes to every job
PIPELINE = "pipeline"  # GitLab: a pipeline variable (the trigger API, "Run pipeline")
CONFIG = "config"  # Jenkins: the global or job configuration (environment variables)
ENVIRONMENT = "environment"  # Jenkins: the Jenkinsfile's `environment` blocks
CREDENTIAL = "credential:"  # Jenkins: `credential:<id>`, bound by withCredentials/withOptionalCredentials


@dataclass(frozen=True)
class Variable:
    """One environment variable the CI jobs read."""

    name: str
    purpose: str
    needs: Mapping[str, Need]  # make target -> need
    github: str | None
    gitlab: str | None
    jenkins: str | None
    secret: bool = False
    pair: str | None = None  # set together with this one, or neither
    pipelines: tuple[str, ...] = PIPELINES  # where the CI files pass it (elsewhere the default applies)

    def supply(self, system: str) -> str | None:
        """How `system` (github, gitlab, jenkins) supplies it."""
        return getattr(self, system)


def _for(targets: str, need: Need = Need.OPTIONAL, **more: Need) -> dict[str, Need]:
    """{target: need} for space-separated targets, plus `ci_x=need` overrides (underscores for dashes)."""
    needs = dict.fromkeys(targets.split(), need)
    needs.update({k.replace("_", "-"): v for k, v in more.items()})
    return needs


TEST_JOBS = "ci-verify ci-test-e2e ci-test-docker"
IN_CI_IMAGE = f"{TEST_JOBS} ci-train ci-retrain ci-report ci-release ci-promote"
MLFLOW_JOBS = "ci-train ci-retrain ci-report ci-release ci-promote"
R, O = Need.REQUIRED, Need.OPTIONAL  # noqa: E741 - the table reads better

VARIABLES: tuple[Variable, ...] = (
    Variable(
        "CI",
        "`true` turns on these checks: each target fails naming what is missing instead of falling back "
        "to the embedded defaults (local MLflow store, local DVC remote, images not pushed)",
        _for(" ".join(TARGETS)),
        github=SYSTEM,
        gitlab=SYSTEM,
        jenkins=ENVIRONMENT,
    ),
    Variable(
        "IMAGE_REGISTRY",
        "registry and namespace (e.g. `ghcr.io/<owner>`) the CI image and the release images (serving, "
        "fetch, monitor, pipeline) are pushed to; the jobs pull the CI image from it",
        _for("ci-image-publish ci-release", R),
        github="vars.IMAGE_REGISTRY",
        gitlab="$CI_REGISTRY_IMAGE",
        jenkins=CONFIG,
    ),
    Variable(
        "REGISTRY_USER",
        "`docker login` user for IMAGE_REGISTRY's host (with REGISTRY_PASSWORD); without the pair the "
        "runner's existing login is used",
        _for("ci-image-publish ci-release"),
        github="github.actor",
        gitlab="$CI_REGISTRY_USER",
        jenkins="credential:image-registry",
        pair="REGISTRY_PASSWORD",
    ),
    Variable(
        "REGISTRY_PASSWORD",
        "`docker login` password or token for IMAGE_REGISTRY's host (with REGISTRY_USER)",
        _for("ci-image-publish ci-release"),
        github="secrets.GITHUB_TOKEN",
        gitlab="$CI_REGISTRY_PASSWORD",
        jenkins="credential:image-registry",
        secret=True,
        pair="REGISTRY_USER",
    ),
    Variable(
        "DOCKER_HOST",
        "the Docker engine images are built with; default the host's `/var/run/docker.sock`, which the "
        "job gets from its runner (GitHub: every job container; GitLab: a runner tagged `docker-socket`; "
        "Jenkins: the release agent's `-v` argument)",
        _for("ci-image-publish ci-release"),
        github=None,
        gitlab=None,
        jenkins=None,
    ),
    Variable(
        "MLOPS_DIFF_BASE",
        "the merge request's base commit: verify lints only the files the change touches; train, release "
        "and promote recognise a change that touches only `deploy/envs/` (default: the previous commit)",
        _for("ci-verify ci-train ci-release ci-promote"),
        github="github.event.pull_request.base.sha",
        gitlab="$CI_MERGE_REQUEST_DIFF_BASE_SHA",
        jenkins=None,
        pipelines=("merge_request",),
    ),
    Variable(
        "DVC_REMOTE_URL",
        "the shared DVC remote: train restores the run-cache from it and pushes its outputs; retrain "
        "pushes the new data its merge request reproduces; report and release pull the raw table and "
        "the splits (the champion comparison, the drift reference and evaluation rows registered with "
        "the model). Optional for train: fork merge requests get no secrets, and then nothing is pushed",
        _for("ci-train", O, ci_retrain=R, ci_report=Need.PRODUCTION, ci_release=R),
        github="secrets.DVC_REMOTE_URL",
        gitlab=PROJECT,
        jenkins="credential:dvc-remote-url",
        secret=True,
    ),
    Variable(
        "MLFLOW_TRACKING_URI",
        "the team's MLflow server: release registers the model there, promote reads it, the report "
        "fetches the production champion from it. Optional for train and retrain (their runs then go to "
        "a throwaway store in the job's workspace)",
        _for("ci-train ci-retrain", O, ci_report=Need.PRODUCTION, ci_release=R, ci_promote=R),
        github="secrets.MLFLOW_TRACKING_URI",
        gitlab=PROJECT,
        jenkins="credential:mlflow-tracking-uri",
        secret=True,
    ),
    Variable(
        "MLFLOW_TRACKING_USERNAME",
        "MLflow server basic-auth user (with MLFLOW_TRACKING_PASSWORD), when the server requires it",
        _for(MLFLOW_JOBS),
        github="secrets.MLFLOW_TRACKING_USERNAME",
        gitlab=PROJECT,
        jenkins="credential:mlflow-credentials",
        secret=True,
        pair="MLFLOW_TRACKING_PASSWORD",
    ),
    Variable(
        "MLFLOW_TRACKING_PASSWORD",
        "MLflow server basic-auth password (with MLFLOW_TRACKING_USERNAME)",
        _for(MLFLOW_JOBS),
        github="secrets.MLFLOW_TRACKING_PASSWORD",
        gitlab=PROJECT,
        jenkins="credential:mlflow-credentials",
        secret=True,
        pair="MLFLOW_TRACKING_USERNAME",
    ),
    Variable(
        "MLFLOW_TRACKING_TOKEN",
        "MLflow server bearer token, for servers behind token authentication (instead of the user and "
        "password)",
        _for(MLFLOW_JOBS),
        github="secrets.MLFLOW_TRACKING_TOKEN",
        gitlab=PROJECT,
        jenkins="credential:mlflow-tracking-token",
        secret=True,
    ),
    Variable(
        "MLOPS_SQL_URL",
        "SQLAlchemy URL of the SQL source (the name params.yaml `ingest.sql.url_env` gives; credentials "
        "never live in params.yaml): fingerprint and ingest read it",
        _for("ci-train ci-retrain", Need.SQL),
        github="secrets.MLOPS_SQL_URL",
        gitlab=PROJECT,
        jenkins="credential:mlops-sql-url",
        secret=True,
    ),
    Variable(
        "GITHUB_TOKEN",
        "GitHub token: the review comment (optional: fork pull requests get a read-only one, and the "
        "report is then only written), the production pull request (promote) and the retrain pull "
        "request (promote and retrain: secret MLOPS_BOT_TOKEN first, so that pull request starts its "
        "workflows; promote's checkout pushes the staging record with it too)",
        _for("ci-report", O, ci_retrain=Need.GITHUB, ci_promote=Need.GITHUB),
        github="secrets.GITHUB_TOKEN",
        gitlab=None,
        jenkins="credential:forge-token",
        secret=True,
    ),
    Variable(
        "GITLAB_TOKEN",
        "GitLab project access token (`api`, `write_repository`): the review note (optional: forks get "
        "no secrets), the production merge request, the retrain merge request, and the push URL of "
        "promote and retrain",
        _for("ci-report", O, ci_retrain=Need.GITLAB, ci_promote=Need.GITLAB),
        github=None,
        gitlab=PROJECT,
        jenkins="credential:forge-token",
        secret=True,
    ),
    Variable(
        "PROMOTE_PUSH_URL",
        "git URL promote and retrain push with (the staging record, `retrain/<date>`): GitLab's job token "
        "cannot push, so the job builds it from GITLAB_TOKEN; GitHub's checkout credentials can push",
        _for("ci-retrain ci-promote"),
        github=None,
        gitlab="${GITLAB_TOKEN}",
        jenkins="credential:promote-push-url",
        secret=True,
    ),
    Variable(
        "MLOPS_FORGE",
        "`github` or `gitlab`: where the report, promote and retrain open comments and merge requests, "
        "when the CI is neither GitHub Actions nor GitLab CI (detected there)",
        _for("ci-report", O, ci_retrain=Need.NO_FORGE, ci_promote=Need.NO_FORGE),
        github=None,
        gitlab=None,
        jenkins=CONFIG,
    ),
    Variable(
        "GITHUB_REPOSITORY",
        "`owner/name` of the repository the pull requests and comments go to",
        _for("ci-report", O, ci_retrain=Need.GITHUB, ci_promote=Need.GITHUB),
        github=SYSTEM,
        gitlab=None,
        jenkins=CONFIG,
    ),
    Variable(
        "GITHUB_API_URL",
        "GitHub API base (default https://api.github.com; GitHub Enterprise sets its own)",
        _for("ci-report ci-retrain ci-promote"),
        github=SYSTEM,
        gitlab=None,
        jenkins=CONFIG,
    ),
    Variable(
        "CI_PROJECT_ID",
        "GitLab project id (or `group/name` path) the merge requests and notes go to",
        _for("ci-report", O, ci_retrain=Need.GITLAB, ci_promote=Need.GITLAB),
        github=None,
        gitlab=SYSTEM,
        jenkins=CONFIG,
    ),
    Variable(
        "CI_API_V4_URL",
        "GitLab API base (default https://gitlab.com/api/v4)",
        _for("ci-report ci-retrain ci-promote"),
        github=None,
        gitlab=SYSTEM,
        jenkins=CONFIG,
    ),
    Variable(
        "MLOPS_MR_NUMBER",
        "the change request's number where the CI has no variable the report knows (Jenkins: CHANGE_ID)",
        _for("ci-report"),
        github=None,
        gitlab=None,
        jenkins=ENVIRONMENT,
        pipelines=("merge_request",),
    ),
    Variable(
        "MLOPS_FORGE_BOT_LOGIN",
        "the `<app>[bot]` login of a GitHub app whose installation token posts the report (default "
        "github-actions[bot])",
        _for("ci-report"),
        github=None,
        gitlab=None,
        jenkins=None,
    ),
    Variable(
        "MLOPS_RETRAIN_REASON",
        "why this retrain runs (default `scheduled retrain`): the retrain merge request's title",
        _for("ci-retrain"),
        github="inputs.reason",
        gitlab=PIPELINE,
        jenkins=ENVIRONMENT,
    ),
    Variable(
        "MLOPS_PROMOTED_BY",
        "who promotes, in the record (default the CI's user: GITLAB_USER_LOGIN, GITHUB_ACTOR, BUILD_USER_ID)",
        _for("ci-promote"),
        github=None,
        gitlab=None,
        jenkins=None,
    ),
    Variable(
        "VENV",
        "the virtualenv the Makefile uses (`/opt/venv` in the CI image: the pinned dependencies, "
        "preinstalled)",
        _for(IN_CI_IMAGE),
        github=IMAGE,
        gitlab=IMAGE,
        jenkins=IMAGE,
    ),
    Variable(
        "NODE_MODULES",
        "the Node tools (gitlab-ci-local, npm-groovy-lint) at tools/package-lock.json's versions",
        _for(TEST_JOBS),
        github=IMAGE,
        gitlab=IMAGE,
        jenkins=IMAGE,
    ),
    Variable(
        "MLOPS_TOOL_CACHE",
        "prebuilt virtualenvs of the tools whose pins conflict with the project's (KServe OIP client, "
        "KFP compiler)",
        _for(TEST_JOBS),
        github=IMAGE,
        gitlab=IMAGE,
        jenkins=IMAGE,
    ),
    Variable(
        "OIP_SPEC_LOCATION",
        "the Open Inference Protocol spec the serving tests check against (default: the published spec)",
        _for(TEST_JOBS),
        github=None,
        gitlab=None,
        jenkins=None,
    ),
    Variable(
        "MLOPS_CRD_SCHEMAS",
        "the custom-resource JSON schemas the chart tests validate against (default: the published "
        "CRDs catalog)",
        _for(TEST_JOBS),
        github=None,
        gitlab=None,
        jenkins=None,
    ),
)
BY_NAME = {v.name: v for v in VARIABLES}


def describe_supply(system: str, how: str | None) -> str:
    """How `system` (github, gitlab, jenkins) supplies a variable, in words (docs cells, check hints)."""
    if how is None:
        return "–"
    words = {
        SYSTEM: {"github": "set by GitHub", "gitlab": "predefined by GitLab", "jenkins": "set by Jenkins"}[
            system
        ],
        IMAGE: "the CI image (`Dockerfile.ci` ENV)",
        PROJECT: "project CI/CD variable",
        PIPELINE: "pipeline variable (trigger API, Run pipeline)",
        CONFIG: "global or job configuration",
        ENVIRONMENT: "Jenkinsfile `environment`",
    }
    if how in words:
        return words[how]
    if how.startswith(CREDENTIAL):
        return f"credential `{how.removeprefix(CREDENTIAL)}`"
    if system == "github":
        return f"`${{{{ {how} }}}}`"
    return f"`{how}` (`variables:`)"
