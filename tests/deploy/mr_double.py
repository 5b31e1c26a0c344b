"""TEST DOUBLE (not a real forge): a local HTTP server imitating the merge-request endpoints `mlops promote`
uses on a protected environment, on 127.0.0.1 only.

- GitHub: `GET /github/repos/{owner}/{repo}/pulls?state=open&head=owner:branch&base=main` (list) and
  `POST /github/repos/{owner}/{repo}/pulls` with `{title, head, base, body}`; auth `Authorization: Bearer`.
- GitLab: `GET /gitlab/api/v4/projects/{id}/merge_requests?state=opened&source_branch=&target_branch=` and
  `POST` with `{source_branch, target_branch, title, description, remove_source_branch}`; `PRIVATE-TOKEN`.

Like the real APIs it answers 401 on a wrong token, 422 when a required field is missing or the head
branch does not exist in the git remote it is given (GitHub checks that the branch was pushed), and 422
for a second open pull request with the same head and base. It records every request. It does not
imitate permissions, rate limits or pagination.
"""

from __future__ import annotations

import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from http_double import Reply, Request, Served, json_body

GH = re.compile(r"/github/repos/([^/]+)/([^/]+)/pulls")
GL = re.compile(r"/gitlab/api/v4/projects/([^/]+)/merge_requests")
REQUIRED = {
    "github": {"title", "head", "base"},
    "gitlab": {"source_branch", "target_branch", "title"},
}


@dataclass
class MrDouble:
    """State: the expected token, the git remote the branches must exist in, MRs opened, requests seen."""

    token: str
    remote: Path
    merge_requests: list[dict[str, Any]] = field(default_factory=list)
    requests: list[Request] = field(default_factory=list)
    url: str = ""

    def handle(self, req: Request) -> Reply:
        return _handle(self, req)


def _branch_exists(remote: Path, branch: str) -> bool:
    ref = subprocess.run(
        ["git", "rev-parse", "--verify", f"refs/heads/{branch}"], cwd=remote, capture_output=True
    )
    return ref.returncode == 0


def _handle(state: MrDouble, req: Request) -> Reply:
    q = {k: v[0] for k, v in req.query.items()}
    gh, gl = GH.fullmatch(req.path), GL.fullmatch(req.path)
    if not (gh or gl):
        return Reply(404, {"message": "Not Found"})
    forge = "github" if gh else "gitlab"
    if forge == "github":
        ok = req.headers.get("authorization") == f"Bearer {state.token}"
    else:
        ok = req.headers.get("private-token") == state.token
    if not ok:
        return Reply(401, {"message": "Bad credentials"})
    mine = [m for m in state.merge_requests if m["forge"] == forge and m["state"] == "open"]
    head_key, base_key = ("head", "base") if forge == "github" else ("source_branch", "target_branch")
    if req.method == "GET":
        want_head = q.get(head_key, "")
        if forge == "github":  # `owner:branch`
            want_head = want_head.split(":", 1)[-1]
        found = [
            m
            for m in mine
            if (not want_head or m["source"] == want_head)
            and (not q.get(base_key) or m["target"] == q[base_key])
        ]
        return Reply(200, [m["api"] for m in found])
    if req.method != "POST":
        return Reply(405, {"message": "method not allowed"})
    body, bad = json_body(req)
    if bad:
        return bad
    missing = REQUIRED[forge] - set(body)
    if missing:
        return Reply(422, {"message": f"missing {sorted(missing)}"})
    source, target = body[head_key], body[base_key]
    if not _branch_exists(state.remote, source):
        return Reply(422, {"message": f"head branch {source} not found"})
    if any(m["source"] == source and m["target"] == target for m in mine):
        return Reply(422, {"message": "A pull request already exists"})
    number = len(state.merge_requests) + 1
    api = (
        {"number": number, "html_url": f"{state.url}/pull/{number}", "title": body["title"]}
        if forge == "github"
        else {"iid": number, "web_url": f"{state.url}/-/merge_requests/{number}", "title": body["title"]}
    )
    state.merge_requests.append(
        {"forge": forge, "state": "open", "source": source, "target": target, "body": body, "api": api}
    )
    return Reply(201, api)


def running(token: str, remote: Path) -> Served:
    """Context manager: start the double on a free loopback port; yields its MrDouble state."""
    return Served(MrDouble(token, remote))
