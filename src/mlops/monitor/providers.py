"""providers: the retrain trigger's three CI APIs (see mlops.monitor.trigger): where to POST, how to
authenticate, and how to list the recent retrain runs the cooldown asks for.

GitHub `workflow_dispatch` and GitLab's pipeline trigger reuse `mlops.review_comment` (its API bases, repository
ids and auth headers from the CI variables, and its HTTP helper, which names the provider, path and
status and never the token); Jenkins gets the same `review_comment.Forge` shape with HTTP basic auth.
"""

from __future__ import annotations

import base64
import dataclasses
import datetime as dt
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from mlops import review_comment
from mlops.errors import ConfigError
from mlops.params.retrain import RetrainParams

REASON_VARIABLE = "MLOPS_RETRAIN_REASON"  # GitLab pipeline variable; the retrain job reads it
JENKINS_PARAMETER = "RETRAIN_REASON"  # Jenkinsfile `parameters { string(name: 'RETRAIN_REASON') }`


@dataclass(frozen=True)
class Target:
    """One provider's endpoints: the trigger call, the lookup of recent runs, and how to describe them."""

    provider: str
    api: (
        review_comment.Forge
    )  # base URL + auth headers of the trigger call (review_comment._request does HTTP)
    lookup: review_comment.Forge | None  # base + auth for listing recent runs; None: the CI cannot be asked
    trigger_path: str
    trigger_body: dict[str, Any] | None
    runs_path: str
    web_url: str
    token_env: str


def need(env: Mapping[str, str], name: str, what: str) -> str:
    value = env.get(name, "")
    if not value:
        raise ConfigError(f"retrain trigger: environment variable {name} is not set ({what})")
    return value


def provider_of(params: RetrainParams, env: Mapping[str, str]) -> str:
    """`retrain.provider`, or for `auto` the forge of this environment (MLOPS_FORGE or the CI's variables)."""
    if params.provider != "auto":
        return params.provider
    kind = review_comment.forge_kind(env)
    if kind in ("github", "gitlab"):
        return kind
    raise ConfigError(
        "retrain.provider: auto found no CI system (set MLOPS_FORGE=github|gitlab, or retrain.provider "
        "to github, gitlab or jenkins in params.yaml)"
    )


def github(params: RetrainParams, reason: str, env: Mapping[str, str], since: str) -> Target:
    cfg = params.github
    repo = cfg.repository or need(env, "GITHUB_REPOSITORY", "owner/name, or retrain.github.repository")
    token = need(env, cfg.token_env, "retrain.github.token_env: a token with actions: write")
    api = review_comment.repository_api(
        {**env, "MLOPS_FORGE": "github", "GITHUB_REPOSITORY": repo, "GITHUB_TOKEN": token}
    )
    workflow = urllib.parse.quote(cfg.workflow, safe="")
    base = f"/repos/{repo}/actions/workflows/{workflow}"
    server = env.get("GITHUB_SERVER_URL", "https://github.com").rstrip("/")
    return Target(
        "github",
        api,
        api,
        base + "/dispatches",
        {"ref": params.ref, "inputs": {"reason": reason}},
        f"{base}/runs?created=%3E%3D{urllib.parse.quote(since)}&per_page=20",
        f"{server}/{repo}/actions/workflows/{cfg.workflow}",
        cfg.token_env,
    )


def gitlab(params: RetrainParams, reason: str, env: Mapping[str, str], since: str) -> Target:
    cfg = params.gitlab
    project = cfg.project or need(env, "CI_PROJECT_ID", "the project id, or retrain.gitlab.project")
    token = need(env, cfg.trigger_token_env, "retrain.gitlab.trigger_token_env: a pipeline trigger token")
    api_token = env.get(cfg.api_token_env, "") if cfg.api_token_env else ""
    repo_env = {**env, "MLOPS_FORGE": "gitlab", "CI_PROJECT_ID": project, "GITLAB_TOKEN": api_token or token}
    lookup = review_comment.repository_api(
        repo_env
    )  # API base (CI_API_V4_URL) and PRIVATE-TOKEN for the lookup
    # the trigger token authenticates in the body; a PRIVATE-TOKEN header with it would be refused
    api = dataclasses.replace(lookup, headers={}, token=token)
    base = f"/projects/{urllib.parse.quote(project, safe='')}"
    q = urllib.parse.urlencode(
        {"source": "trigger", "ref": params.ref, "updated_after": since, "per_page": 20}
    )
    web = env.get("CI_PROJECT_URL") or f"{lookup.api.removesuffix('/api/v4')}/{project}"
    return Target(
        "gitlab",
        api,
        dataclasses.replace(lookup, token=api_token) if api_token else None,
        base + "/trigger/pipeline",
        {"token": token, "ref": params.ref, "variables": {REASON_VARIABLE: reason}},
        f"{base}/pipelines?{q}",
        f"{web.rstrip('/')}/-/pipelines",
        cfg.trigger_token_env,
    )


def jenkins(params: RetrainParams, reason: str, env: Mapping[str, str]) -> Target:
    cfg = params.jenkins
    job = (cfg.job_url or need(env, "JOB_URL", "the job URL, or retrain.jenkins.job_url")).rstrip("/")
    user = need(env, cfg.user_env, "retrain.jenkins.user_env: the Jenkins user")
    token = need(env, cfg.token_env, "retrain.jenkins.token_env: the user's API token")
    basic = base64.b64encode(f"{user}:{token}".encode()).decode()
    api = review_comment.Forge("jenkins", job, "", "", "POST", {"Authorization": f"Basic {basic}"}, token)
    tree = "builds[number,url,timestamp,actions[parameters[name,value]]]{0,20}"
    return Target(
        "jenkins",
        api,
        api,
        "/buildWithParameters?" + urllib.parse.urlencode({JENKINS_PARAMETER: reason}),
        None,
        "/api/json?tree=" + urllib.parse.quote(tree, safe=""),
        job + "/",
        cfg.token_env,
    )


def parse_time(value: Any) -> dt.datetime | None:
    try:
        if isinstance(value, int | float):  # Jenkins: epoch milliseconds
            return dt.datetime.fromtimestamp(value / 1000, dt.UTC)
        return dt.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except (TypeError, ValueError, OverflowError):
        return None


def recent_run(target: Target, since: dt.datetime) -> dict[str, Any] | None:
    """The newest retrain run the CI started at or after `since` ({started, url}), or None.

    Raises:
        review_comment.ForgeError: the lookup failed (the caller falls back to `retrain.state_url`).
    """
    answer, _ = review_comment._request(target.lookup, "GET", target.runs_path)
    if target.provider == "github":
        runs = [(r.get("created_at"), r.get("html_url")) for r in (answer or {}).get("workflow_runs", [])]
    elif target.provider == "gitlab":
        runs = [(r.get("created_at"), r.get("web_url")) for r in answer or []]
    else:  # only builds started with the retrain parameter count, not the job's other builds
        runs = [
            (b.get("timestamp"), b.get("url"))
            for b in (answer or {}).get("builds", [])
            if any(
                p.get("name") == JENKINS_PARAMETER and p.get("value")
                for a in b.get("actions") or []
                if isinstance(a, dict)
                for p in a.get("parameters") or []
            )
        ]
    started = [(t, url) for raw, url in runs if (t := parse_time(raw)) is not None and t >= since]
    if not started:
        return None
    t, url = max(started, key=lambda r: r[0])
    return {"started": t, "url": url}


def with_crumb(api: review_comment.Forge) -> review_comment.Forge:
    """The Jenkins API with its CSRF crumb header, when the server issues one (404: CSRF protection off)."""
    root = api.api.split("/job/", 1)[0]
    try:
        crumb, _ = review_comment._request(dataclasses.replace(api, api=root), "GET", "/crumbIssuer/api/json")
    except review_comment.ForgeError as e:
        if "HTTP 404" in str(e):
            return api
        raise
    if not isinstance(crumb, dict) or "crumb" not in crumb:
        return api
    field = str(crumb.get("crumbRequestField") or "Jenkins-Crumb")
    return dataclasses.replace(api, headers={**api.headers, field: str(crumb["crumb"])})
