"""trigger: start the retrain pipeline in CI (GitHub workflow_dispatch, GitLab trigger, Jenkins build).

`trigger_retrain(params.retrain, reason)` starts the CI pipeline that retrains the model (the `retrain`
workflow / job / stage, `make ci-retrain`). That pipeline reproduces the DVC pipeline (gate included) and
opens a review merge request; it never deploys by itself. The provider comes from params `retrain.provider`:

- github: `POST /repos/{owner}/{repo}/actions/workflows/{workflow}/dispatches` with `ref` and
  `inputs.reason` (token: a fine-grained token or app token with actions: write);
- gitlab: `POST /projects/{id}/trigger/pipeline` with a pipeline trigger token, `ref` and the variable
  `MLOPS_RETRAIN_REASON`;
- jenkins: `POST {job_url}/buildWithParameters?RETRAIN_REASON=...` with HTTP basic auth (user + API
  token), and the CSRF crumb when the server issues one.

Tokens are read only from the environment variables that params name (never from params themselves);
API bases and repository/project ids default to the CI variables `mlops.review_comment` already reads
(`GITHUB_API_URL`, `GITHUB_REPOSITORY`, `CI_API_V4_URL`, `CI_PROJECT_ID`, `JOB_URL`). In a cluster, the
chart sets them on the CronJob.

Cooldown (a second trigger within `retrain.cooldown_hours` is a no-op that says so). Where that state
lives matters because the caller is usually a Kubernetes CronJob: every run is a fresh pod with no disk
that survives it. So the state is not kept by the caller at all; the CI system is asked, statelessly,
whether a retrain run started within the window:

1. GitHub: the retrain workflow's runs created since then (`GET .../workflows/{workflow}/runs`);
   GitLab: trigger-sourced pipelines on `ref` since then (needs a read_api token in
   `retrain.gitlab.api_token_env`: a trigger token cannot list pipelines); Jenkins: builds of the job
   with a RETRAIN_REASON parameter since then. The CI's record is the truth: a run started by hand or
   by another trigger counts too, and nothing can get out of step with it.
2. Fallback, when the CI cannot be asked (no GitLab API token, or the lookup fails): the JSON record at
   `retrain.state_url`, a path or any fsspec URL (e.g. the object store the prediction log goes to), read
   before and written after a trigger. With neither, the cooldown is not enforced (a warning says so)
   and the CI's own serialisation (one retrain at a time; the day's `retrain/<date>` branch and its one
   merge request) is what limits repeats.
3. A long-lived caller (the Alertmanager webhook receiver, `mlops.monitor.webhook`) also remembers its own
   last trigger, which covers the seconds before a dispatched run shows up in the CI's API.

The providers' endpoints and run listings are in `mlops.monitor.providers`.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from mlops import review_comment
from mlops.errors import MlopsError
from mlops.monitor import providers
from mlops.monitor.providers import JENKINS_PARAMETER, REASON_VARIABLE
from mlops.params.retrain import RetrainParams

log = logging.getLogger(__name__)
__all__ = ["JENKINS_PARAMETER", "REASON_VARIABLE", "TriggerFailed", "TriggerResult", "trigger_retrain"]

MAX_REASON = 500  # GitHub caps a workflow input at 1,000 characters; a reason is a line, not a report


class TriggerFailed(MlopsError):
    """The CI system refused or did not answer the trigger (the message names the provider and status)."""

    exit_code = 1
    http_status = 502


@dataclass(frozen=True)
class TriggerResult:
    """What `trigger_retrain` did: started a run (`triggered`) or nothing inside the cooldown."""

    triggered: bool
    provider: str
    message: str
    url: str | None = None


# ---------------------------------------------------------------- fallback state (path or fsspec URL)
def read_state(url: str) -> dict[str, Any] | None:
    """The last trigger recorded at `url`, or None when there is none (or it is unreadable: warned)."""
    import fsspec

    try:
        with fsspec.open(url, "r", encoding="utf-8") as f:
            state = json.load(f)
        return state if isinstance(state, dict) else None
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as e:
        log.warning("retrain: cooldown record %s unreadable (%s): treated as absent", url, e)
        return None


def write_state(url: str, state: dict[str, Any]) -> None:
    """Record the trigger at `url` (a local file atomically; other fsspec URLs as one object write)."""
    import fsspec

    from mlops.files import write_json

    if "://" not in url or url.startswith("file://"):
        write_json(url.removeprefix("file://"), state)
        return
    with fsspec.open(url, "w", encoding="utf-8") as f:
        json.dump(state, f)


# ---------------------------------------------------------------- the trigger
def _start(target: providers.Target) -> str | None:
    """POST the trigger; return the run's web URL when the API tells it."""
    api = target.api
    if target.provider == "jenkins":
        api = providers.with_crumb(api)
    answer, _ = review_comment._request(api, "POST", target.trigger_path, target.trigger_body)
    if isinstance(answer, dict) and answer.get("web_url"):  # GitLab: the new pipeline
        return str(answer["web_url"])
    return target.web_url


def trigger_retrain(
    params: RetrainParams,
    reason: str,
    env: Mapping[str, str] = os.environ,
    now: dt.datetime | None = None,
) -> TriggerResult:
    """Start the retrain pipeline unless one started within the cooldown (see the module docstring).

    Args:
        params: params.yaml `retrain`.
        reason: why (shown in the CI run and the merge request); one line, truncated to 500 characters.
        env: where tokens, repository ids and API bases are read.
        now: the current time (tests).

    Returns:
        TriggerResult(triggered, provider, message, url).

    Raises:
        ConfigError: no provider, or a token or id variable is missing (named; exit 2).
        TriggerFailed: the CI API refused or did not answer (provider, path and HTTP status; exit 1).
    """
    reason = " ".join(reason.split())[:MAX_REASON] or "unspecified"
    now = now or dt.datetime.now(dt.UTC)
    since = now - dt.timedelta(hours=params.cooldown_hours)
    since_iso = since.replace(microsecond=0).isoformat().replace("+00:00", "Z")
    provider = providers.provider_of(params, env)
    if provider == "github":
        target = providers.github(params, reason, env, since_iso)
    elif provider == "gitlab":
        target = providers.gitlab(params, reason, env, since_iso)
    else:
        target = providers.jenkins(params, reason, env)

    if params.cooldown_hours > 0:
        skip = _cooldown(target, params, since)
        if skip is not None:
            return skip

    try:
        url = _start(target)
    except review_comment.ForgeError as e:
        raise TriggerFailed(
            review_comment.redact(
                f"retrain trigger: {e} (is {target.token_env} valid for this?)", target.api.token
            )
        ) from None
    log.info("retrain: %s pipeline triggered on %s (%s)", provider, params.ref, reason)
    if params.state_url:
        write_state(params.state_url, {"triggered_at": _iso(now), "provider": provider, "reason": reason})
    return TriggerResult(
        True, provider, f"triggered the {provider} retrain pipeline on {params.ref}: {reason}", url
    )


def _iso(t: dt.datetime) -> str:
    return t.astimezone(dt.UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


def _cooldown(target: providers.Target, params: RetrainParams, since: dt.datetime) -> TriggerResult | None:
    """A no-op result when a retrain started within the window (the CI asked first, then the record)."""
    hours = f"{params.cooldown_hours:g}h"
    asked = False
    if target.lookup is not None:
        try:
            run = providers.recent_run(target, since)
            asked = True
        except review_comment.ForgeError as e:
            log.warning("retrain: could not ask %s for recent runs (%s)", target.provider, e)
            run = None
        if run:
            return TriggerResult(
                False,
                target.provider,
                f"not triggered: a {target.provider} retrain run started at {_iso(run['started'])}, within "
                f"the {hours} cooldown",
                run["url"],
            )
    if params.state_url:
        state = read_state(params.state_url)
        last = providers.parse_time((state or {}).get("triggered_at"))
        if last is not None and last >= since:
            return TriggerResult(
                False,
                target.provider,
                f"not triggered: last trigger at {_iso(last)} ({params.state_url}), within the {hours} cooldown",
                None,
            )
    elif not asked:
        log.warning(
            "retrain: cooldown not enforced: %s cannot be asked for recent runs and retrain.state_url is empty",
            target.provider,
        )
    return None
