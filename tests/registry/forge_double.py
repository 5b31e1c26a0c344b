"""TEST DOUBLE (not a real forge): a local HTTP server imitating the two REST endpoints `mlops report --post`
uses, on 127.0.0.1 only.

- GitHub: `GET/POST /github/repos/{owner}/{repo}/issues/{n}/comments`, `PATCH
  /github/repos/{owner}/{repo}/issues/comments/{id}`, `GET /github/user`; auth `Authorization: Bearer
  <token>`. Comments carry their author as `user: {login, id, type}`.
- GitLab: `GET/POST /gitlab/api/v4/projects/{id}/merge_requests/{iid}/notes`, `PUT .../notes/{id}`,
  `GET /gitlab/api/v4/user`; auth `PRIVATE-TOKEN: <token>`. Notes carry `author: {id, username}`.

Comments created through the API are authored by the token's user. With `installation=True` the token
behaves like GitHub Actions' `GITHUB_TOKEN` (an app installation token): `GET /user` answers 403
"Resource not accessible by integration", and its comments are authored by `github-actions[bot]`
(type Bot), as on github.com. Like the real forges for a user with write access, the double lets the
token update any comment, whoever wrote it: refusing to touch other users' comments is the client's job.

It checks what the real APIs would reject (method, path, auth header, JSON body `{"body": str}` and
nothing else) and answers 401/404/405/422 like them; it records every request for the tests to inspect.
It does not imitate rate limits, permissions beyond the token, or Link headers (pagination is by
`page`/`per_page`, which both APIs accept).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from http_double import Reply, Request, Served, json_body

GH_LIST = re.compile(r"/github/repos/([^/]+)/([^/]+)/issues/(\d+)/comments")
GH_ITEM = re.compile(r"/github/repos/([^/]+)/([^/]+)/issues/comments/(\d+)")
GL_LIST = re.compile(r"/gitlab/api/v4/projects/([^/]+)/merge_requests/(\d+)/notes")
GL_ITEM = re.compile(r"/gitlab/api/v4/projects/([^/]+)/merge_requests/(\d+)/notes/(\d+)")


BOT = {"id": 9001, "login": "mlops-bot", "type": "User"}  # the token's user (a bot account, as teams use)
ACTIONS_BOT = {"id": 41898282, "login": "github-actions[bot]", "type": "Bot"}  # GITHUB_TOKEN's author
SOMEONE = {"id": 4242, "login": "someone-else", "type": "User"}


@dataclass
class ForgeDouble:
    """State of the double: the expected token and its user, the comments per thread, the requests seen."""

    token: str
    installation: bool = False  # GitHub app installation token (GITHUB_TOKEN): no GET /user
    comments: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # thread key -> comments
    requests: list[Request] = field(default_factory=list)
    next_id: int = 1000
    url: str = ""

    def handle(self, req: Request) -> Reply:
        return _handle(self, req)

    @property
    def user(self) -> dict[str, Any]:
        """The author of comments made with the token."""
        return ACTIONS_BOT if self.installation else BOT

    def add(self, thread: str, body: str, author: dict[str, Any] = SOMEONE) -> int:
        """Seed a comment (by default someone else's) into a thread; return its id."""
        self.next_id += 1
        self.comments.setdefault(thread, []).append({"id": self.next_id, "body": body, "author": author})
        return self.next_id


def _render(forge: str, comment: dict[str, Any]) -> dict[str, Any]:
    """A stored comment as the forge's API shows it (GitHub `user`, GitLab `author`)."""
    a = comment["author"]
    if forge == "github":
        return {"id": comment["id"], "body": comment["body"], "user": dict(a)}
    return {"id": comment["id"], "body": comment["body"], "author": {"id": a["id"], "username": a["login"]}}


def _handle(state: ForgeDouble, req: Request) -> Reply:
    forge = "github" if req.path.startswith("/github/") else "gitlab"
    if forge == "github":
        ok = req.headers.get("authorization") == f"Bearer {state.token}"
        ok = ok and req.headers.get("accept") == "application/vnd.github+json"
    else:
        ok = req.headers.get("private-token") == state.token
    if not ok:
        return Reply(401, {"message": "Bad credentials"})
    if req.path in ("/github/user", "/gitlab/api/v4/user"):
        if req.method != "GET":
            return Reply(405, {"message": "method not allowed"})
        if forge == "github" and state.installation:
            return Reply(403, {"message": "Resource not accessible by integration"})
        if forge == "github":
            return Reply(200, {"login": state.user["login"], "id": state.user["id"]})
        return Reply(200, {"id": state.user["id"], "username": state.user["login"]})
    body = None
    if req.method in ("POST", "PATCH", "PUT"):
        body, bad = json_body(req)
        if bad:
            return bad
        if not isinstance(body, dict) or set(body) != {"body"} or not isinstance(body["body"], str):
            return Reply(422, {"message": 'body must be {"body": string}'})
    routes = [(GH_ITEM, "PATCH"), (GH_LIST, None), (GL_ITEM, "PUT"), (GL_LIST, None)]
    for pattern, item_method in routes:
        m = pattern.fullmatch(req.path)
        if not m:
            continue
        if item_method:  # update one comment by id
            if req.method != item_method:
                return Reply(405, {"message": "method not allowed"})
            cid = int(m.groups()[-1])
            for thread in state.comments.values():
                for c in thread:
                    if c["id"] == cid:
                        c["body"] = body["body"]
                        return Reply(200, _render(forge, c))
            return Reply(404, {"message": "Not Found"})
        thread = f"{forge}:" + "/".join(m.groups())
        items = state.comments.setdefault(thread, [])
        if req.method == "GET":
            per_page, page = int(req.first("per_page", "20")), int(req.first("page", "1"))
            shown = items[(page - 1) * per_page : page * per_page]
            return Reply(200, [_render(forge, c) for c in shown])
        if req.method == "POST":
            state.next_id += 1
            item = {"id": state.next_id, "body": body["body"], "author": state.user}
            items.append(item)
            return Reply(201, _render(forge, item))
        return Reply(405, {"message": "method not allowed"})
    return Reply(404, {"message": "Not Found"})


def running(token: str, installation: bool = False) -> Served:
    """Context manager: start the double on a free loopback port; yields its ForgeDouble state."""
    return Served(ForgeDouble(token, installation))
