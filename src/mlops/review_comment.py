"""review_comment: post the review report as ONE merge-request comment on GitHub or GitLab (created, then updated).

The forge is chosen from the CI's environment: GitHub Actions (`GITHUB_ACTIONS=true`: pull request
comments through the issues comments API, token `GITHUB_TOKEN`) or GitLab CI (`GITLAB_CI=true`: merge
request notes, token `GITLAB_TOKEN`, a project access token with `api` scope). Elsewhere (e.g. Jenkins)
set `MLOPS_FORGE=github|gitlab` and the same variables. The comment is found again by a hidden marker
AND its author, so every pipeline run updates it instead of adding another: only a comment written by
the token's own user is ever updated (anyone can paste the marker into a comment of their own; updating
that one would let them hide or forge the report). The token's user comes from `GET /user` on both
forges; GitHub Actions' `GITHUB_TOKEN` is an app installation token, for which GitHub answers 403
there, and its comments are authored by `github-actions[bot]` (a `[bot]` login is reserved for GitHub
Apps: no person can hold it); set `MLOPS_FORGE_BOT_LOGIN` to another app's bot login when posting with
that app's installation token. A missing token (fork pull requests get no
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

from mlops.errors import ConfigError, MlopsError

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


def forge_kind(env: Mapping[str, str]) -> str:
    """`github`, `gitlab` or "": MLOPS_FORGE, else the CI system's own variables."""
    return env.get("MLOPS_FORGE") or (
        "github"
        if env.get("GITHUB_ACTIONS") == "true"
        else "gitlab"
        if env.get("GITLAB_CI") == "true"
        else ""
    )


def detect(env: Mapping[str, str] = os.environ) -> Forge | Skipped:
    """The forge and merge request of this CI run, or why there is nothing to post to."""
    kind = forge_kind(env)
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


@dataclass(frozen=True)
class Identity:
    """The user a token acts as: by numeric id where the forge tells it, else by a reserved bot login."""

    id: int | None
    login: str

    def wrote(self, forge: Forge, item: dict[str, Any]) -> bool:
        """Whether this user authored `item` (a GitHub issue comment or a GitLab note)."""
        author = item.get("user" if forge.kind == "github" else "author") or {}
        if self.id is not None:
            return author.get("id") == self.id
        return author.get("login") == self.login and author.get("type") == "Bot"


GITHUB_ACTIONS_BOT = "github-actions[bot]"


def whoami(forge: Forge, env: Mapping[str, str] = os.environ) -> Identity:
    """The token's user (`GET /user`); for a GitHub app installation token (403 there), its bot login."""
    try:
        me, _ = _request(forge, "GET", "/user")
    except ForgeError as e:
        if forge.kind == "github" and "HTTP 403" in str(e):
            login = env.get("MLOPS_FORGE_BOT_LOGIN") or GITHUB_ACTIONS_BOT
            if not login.endswith("[bot]"):  # only reserved app logins identify without an id
                raise ForgeError(
                    f"MLOPS_FORGE_BOT_LOGIN={login!r}: expected an app's `<name>[bot]` login"
                ) from e
            return Identity(None, login)
        raise
    if not isinstance(me, dict) or not isinstance(me.get("id"), int):
        raise ForgeError(f"{forge.kind} API GET /user: no user id in the answer")
    return Identity(me["id"], str(me.get("login") or me.get("username") or me["id"]))


def find_comment(forge: Forge, me: Identity) -> Any | None:
    """The id of the existing report comment (carrying the marker and written by `me`), or None."""
    for page in range(1, 51):
        items, _ = _request(forge, "GET", f"{forge.comments_path}?per_page={PER_PAGE}&page={page}")
        for item in items or []:
            if MARKER in (item.get("body") or "") and me.wrote(forge, item):
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
        existing = find_comment(target, whoami(target, env))
        if existing is not None:
            _request(target, target.update_method, target.item_path.format(id=existing), {"body": body})
            return {"action": "updated", "forge": target.kind, "id": existing}
        created, _ = _request(target, "POST", target.comments_path, {"body": body})
        return {"action": "created", "forge": target.kind, "id": (created or {}).get("id")}
    except ForgeError as e:
        if "HTTP 403" in str(e):  # e.g. GitHub's read-only token on fork pull requests
            return {"action": "skipped", "forge": target.kind, "reason": f"token may not comment ({e})"}
        raise


# ---------------------------------------------------------------- merge requests (`mlops promote`)
def repository_api(env: Mapping[str, str] = os.environ) -> Forge:
    """The forge API of this repository, where `mlops promote` opens merge requests (no MR number needed).

    GitHub: `GITHUB_REPOSITORY` + `GITHUB_TOKEN` (contents and pull-requests write); GitLab: `CI_PROJECT_ID`
    + `GITLAB_TOKEN` (api scope). The forge is chosen as in `detect` (`MLOPS_FORGE` or the CI's variables).

    Raises:
        ConfigError: no forge detected or a variable is missing (named in the message; exit 2).
    """
    kind = forge_kind(env)
    need = {"github": ("GITHUB_REPOSITORY", "GITHUB_TOKEN"), "gitlab": ("CI_PROJECT_ID", "GITLAB_TOKEN")}
    if kind not in need:
        raise ConfigError(
            f"MLOPS_FORGE={kind!r}: cannot open a merge request (set MLOPS_FORGE=github|gitlab, or run in "
            "GitHub Actions / GitLab CI)"
        )
    missing = [v for v in need[kind] if not env.get(v)]
    if missing:
        raise ConfigError(f"cannot open a {kind} merge request: {', '.join(missing)} not set")
    if kind == "github":
        api = env.get("GITHUB_API_URL", "https://api.github.com").rstrip("/")
        token = env["GITHUB_TOKEN"]
        headers = {
            "Authorization": f"Bearer {token}",
            "Accept": "application/vnd.github+json",
            "X-GitHub-Api-Version": "2022-11-28",
        }
        pulls = f"/repos/{env['GITHUB_REPOSITORY']}/pulls"
        return Forge("github", api, pulls, pulls + "/{id}", "PATCH", headers, token)
    api = env.get("CI_API_V4_URL", "https://gitlab.com/api/v4").rstrip("/")
    token = env["GITLAB_TOKEN"]
    mrs = f"/projects/{urllib.parse.quote(env['CI_PROJECT_ID'], safe='')}/merge_requests"
    return Forge("gitlab", api, mrs, mrs + "/{id}", "PUT", {"PRIVATE-TOKEN": token}, token)


def open_merge_request(
    source: str, target: str, title: str, description: str, env: Mapping[str, str] = os.environ
) -> dict[str, Any]:
    """Open a merge request (GitHub pull request) from `source` into `target`, or find the open one.

    Returns:
        {"action": "created"|"exists", "forge": ..., "id": number/iid, "url": web URL}.

    Raises:
        ConfigError: no forge configured (see `repository_api`).
        ForgeError: the API refused; the message never holds the token.
    """
    forge = repository_api(env)
    q = urllib.parse.quote
    if forge.kind == "github":
        owner = env["GITHUB_REPOSITORY"].split("/")[0]
        query = f"?state=open&head={q(owner + ':' + source, safe='')}&base={q(target, safe='')}"
        body = {"title": title, "head": source, "base": target, "body": description}
        number, url = "number", "html_url"
    else:
        query = f"?state=opened&source_branch={q(source, safe='')}&target_branch={q(target, safe='')}"
        body = {
            "source_branch": source,
            "target_branch": target,
            "title": title,
            "description": description,
            "remove_source_branch": True,
        }
        number, url = "iid", "web_url"
    found, _ = _request(forge, "GET", forge.comments_path + query)
    if found:
        return {"action": "exists", "forge": forge.kind, "id": found[0].get(number), "url": found[0].get(url)}
    created, _ = _request(forge, "POST", forge.comments_path, body)
    created = created or {}
    return {"action": "created", "forge": forge.kind, "id": created.get(number), "url": created.get(url)}
