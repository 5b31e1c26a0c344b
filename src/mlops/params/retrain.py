"""params.retrain: `retrain`, how the retrain pipeline is started and its cooldown (mlops.monitor.trigger)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import Field

from mlops.params.base import Section

EnvName = Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")]
OptionalEnvName = Annotated[str, Field(pattern=r"^([A-Za-z_][A-Za-z0-9_]*)?$")]


class GithubRetrain(Section):
    """`retrain.github`: a `workflow_dispatch` of the retrain workflow."""

    repository: str  # owner/name; "" = the GITHUB_REPOSITORY variable
    workflow: str  # the workflow file name (or id) under .github/workflows/
    token_env: EnvName  # env var holding a token with actions: write (read for the cooldown lookup)


class GitlabRetrain(Section):
    """`retrain.gitlab`: the pipeline trigger API (variable MLOPS_RETRAIN_REASON)."""

    project: str  # numeric id or group/name path; "" = the CI_PROJECT_ID variable
    trigger_token_env: EnvName  # env var holding a pipeline trigger token
    api_token_env: OptionalEnvName  # env var of a read_api token for the cooldown lookup; "" = none


class JenkinsRetrain(Section):
    """`retrain.jenkins`: `buildWithParameters` of the pipeline job (parameter RETRAIN_REASON)."""

    job_url: str  # e.g. https://jenkins.example.com/job/mlops/job/main; "" = the JOB_URL variable
    user_env: EnvName  # env var holding the Jenkins user name
    token_env: EnvName  # env var holding that user's API token


class RetrainParams(Section):
    """`retrain`: how `mlops trigger-retrain` (and the drift job) start the retrain pipeline in CI."""

    provider: Literal["auto", "github", "gitlab", "jenkins"]  # auto: MLOPS_FORGE or the CI's variables
    ref: Annotated[str, Field(min_length=1)]  # the branch the retrain pipeline runs on
    cooldown_hours: Annotated[float, Field(ge=0.0)]  # a second trigger within this window is a no-op
    state_url: str  # fallback cooldown record (path or fsspec URL) when the CI cannot be asked; "" = none
    github: GithubRetrain
    gitlab: GitlabRetrain
    jenkins: JenkinsRetrain
