"""forge: post the review report as ONE merge-request comment on GitHub or GitLab (created, then updated).

The forge is chosen from the CI's environment: GitHub Actions (`GITHUB_ACTIONS=true`: pull request
comments through the issues comments API, token `GITHUB_TOKEN`) or GitLab CI (`GITLAB_CI=true`: merge
request notes, token `GITLAB_TOKEN`, a project access token with `api` scope). Elsewhere (e.g. Jenkins)
set `MLOPS_FORGE=github|gitlab` and the same variables. The comment is found again by a hidden marker,
so every pipeline run updates it instead of adding another. A missing token (fork pull requests get no
secrets) or a read-only token is not an error: the report is still written and the command exits 0.
The token never appears in any message.
"""

from __future__ import annotations

import json
import logging
import os
import re
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from mlops.errors import MlopsError

log = logging.getLogger(__name__)

MARKER = "<!-- mlops-review-report -->"
MAX_BODY = 60000  # GitHub rejects comments over 65,536 characters; GitLab notes allow ~1 MB
PER_PAGE = 100


class ForgeError(MlopsError):
    """The forge API answered with an error (the message names the method, path and status)."""

    exit_code = 1


@dataclass(frozen=True)
class Forge:
    """Where and how to post: API base, the comments collection path, the auth header."""

    kind: str  # github | gitlab
    api: str
    comments_path: str  # list (GET) and create (POST)
    item_path: str  # update: format with id=
    update_method: str
    headers: dict[str, str] = field(repr=False)
    token: str = field(repr=False)


@dataclass(frozen=True)
class Skipped:
    """Why nothing was posted (not an error)."""

    reason: str


def _github_pr_number(env: Mapping[str, str]) -> str | None:
    if env.get("MLOPS_MR_NUMBER"):
        return env["MLOPS_MR_NUMBER"]
    event_path = env.get("GITHUB_EVENT_PATH")
    if event_path:
        try:
            number = (
                json.loads(open(event_path, encoding="utf-8").read()).get("pull_request", {}).get("number")
            )
            if number:
                return str(number)
        except (OSError, ValueError):
            pass
    m = re.fullmatch(r"refs/pull/(\d+)/(merge|head)", env.get("GITHUB_REF", ""))
    return m.group(1) if m else None


def detect(env: Mapping[str, str] = os.environ) -> Forge | Skipped:
    """The forge and merge request of this CI run, or why there is nothing to post to."""
    kind = env.get("MLOPS_FORGE") or (
        "github"
        if env.get("GITHUB_ACTIONS") == "true"
        else "gitlab"
        if env.get("GITLAB_CI") == "true"
        else ""
    )
    if kind == "github":
        repo, number = env.get("GITHUB_REPOSITORY"), _github_pr_number(env)
        if not repo or not number:
            return Skipped("not a pull request run (GITHUB_REPOSITORY or the pull request number is missing)")
        token = env.get("GITHUB_TOKEN", "")
        if not token:
            return Skipped("GITHUB_TOKEN is not set (fork pull requests get no secrets)")
        api = env.get("GITHUB_API_URL", "https://api.github.com").rstrip("/")
        return Forge(
            "github",
            api,
            f"/repos/{repo}/issues/{number}/comments",
            f"/repos/{repo}/issues/comments/{{id}}",
            "PATCH",
            {
                "Authorization": f"Bearer {token}",
                "Accept": "application/vnd.github+json",
                "X-GitHub-Api-Version": "2022-11-28",
            },
            token,
        )
    if kind == "gitlab":
        project, iid = env.get("CI_PROJECT_ID"), env.get("CI_MERGE_REQUEST_IID") or env.get("MLOPS_MR_NUMBER")
        if not project or not iid:
            return Skipped("not a merge request pipeline (CI_PROJECT_ID or CI_MERGE_REQUEST_IID is missing)")
        token = env.get("GITLAB_TOKEN", "")
        if not token:
            return Skipped(
                "GITLAB_TOKEN is not set (a project access token with api scope; forks get no secrets)"
            )
        api = env.get("CI_API_V4_URL", "https://gitlab.com/api/v4").rstrip("/")
        base = f"/projects/{urllib.parse.quote(project, safe='')}/merge_requests/{iid}/notes"
        return Forge("gitlab", api, base, base + "/{id}", "PUT", {"PRIVATE-TOKEN": token}, token)
    if kind:
        return Skipped(f"MLOPS_FORGE={kind!r} is not supported (github or gitlab)")
    return Skipped(
        "no GitHub Actions or GitLab CI environment detected (set MLOPS_FORGE to post from elsewhere)"
    )


def _request(
    forge: Forge, method: str, path: str, body: dict[str, Any] | None = None, timeout: float = 30
) -> tuple[Any, int]:
    data = None if body is None else json.dumps(body).encode()
    headers = {**forge.headers, "User-Agent": "mlops-report"}
    if data is not None:
        headers["Content-Type"] = "application/json"
    req = urllib.request.Request(forge.api + path, data=data, method=method, headers=headers)
    shown = path.split("?")[0]
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310 - URL from CI variables
            raw = resp.read()
            return (json.loads(raw) if raw else None), resp.status
    except urllib.error.HTTPError as e:
        raise ForgeError(
            redact(f"{forge.kind} API {method} {shown}: HTTP {e.code} {e.reason}", forge.token)
        ) from None
    except (urllib.error.URLError, OSError, ValueError) as e:
        raise ForgeError(redact(f"{forge.kind} API {method} {shown}: {e}", forge.token)) from None


def redact(text: str, token: str) -> str:
    """`text` with the token replaced (defence in depth: messages are built without it)."""
    return text.replace(token, "***") if token else text


def find_comment(forge: Forge) -> Any | None:
    """The id of the existing report comment (the one carrying the marker), or None."""
    for page in range(1, 51):
        items, _ = _request(forge, "GET", f"{forge.comments_path}?per_page={PER_PAGE}&page={page}")
        for item in items or []:
            if MARKER in (item.get("body") or ""):
                return item["id"]
        if not items or len(items) < PER_PAGE:
            return None
    return None


def post(body: str, env: Mapping[str, str] = os.environ) -> dict[str, Any]:
    """Create or update the one report comment of this merge request.

    Args:
        body: the markdown report (must contain MARKER; truncated to MAX_BODY characters).
        env: the CI environment.

    Returns:
        {"action": "created"|"updated"|"skipped", "forge": ..., "reason"/"id": ...}.

    Raises:
        ForgeError: the API failed (other than a read-only token); the message never holds the token.
    """
    target = detect(env)
    if isinstance(target, Skipped):
        return {"action": "skipped", "reason": target.reason}
    if MARKER not in body:
        body = MARKER + "\n" + body
    if len(body) > MAX_BODY:
        body = body[:MAX_BODY] + "\n\n_(truncated: the full report is in the CI job's artifacts)_\n"
    try:
        existing = find_comment(target)
        if existing is not None:
            _request(target, target.update_method, target.item_path.format(id=existing), {"body": body})
            return {"action": "updated", "forge": target.kind, "id": existing}
        created, _ = _request(target, "POST", target.comments_path, {"body": body})
        return {"action": "created", "forge": target.kind, "id": (created or {}).get("id")}
    except ForgeError as e:
        if "HTTP 403" in str(e):  # e.g. GitHub's read-only token on fork pull requests
            return {"action": "skipped", "forge": target.kind, "reason": f"token may not comment ({e})"}
        raise
