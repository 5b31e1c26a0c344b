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

import json
import re
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlsplit

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
    requests: list[dict[str, Any]] = field(default_factory=list)
    next_id: int = 1000
    url: str = ""

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


def _handler(state: ForgeDouble) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:  # keep test output clean
            pass

        def _reply(self, status: int, obj: Any) -> None:
            data = json.dumps(obj).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def _handle(self) -> None:
            parts = urlsplit(self.path)
            length = int(self.headers.get("Content-Length") or 0)
            raw = self.rfile.read(length) if length else b""
            record = {
                "method": self.command,
                "path": parts.path,
                "query": parse_qs(parts.query),
                "headers": {k.lower(): v for k, v in self.headers.items()},
                "body": raw.decode() if raw else None,
            }
            state.requests.append(record)
            forge = "github" if parts.path.startswith("/github/") else "gitlab"
            if forge == "github":
                ok = self.headers.get("Authorization") == f"Bearer {state.token}"
                ok = ok and self.headers.get("Accept") == "application/vnd.github+json"
            else:
                ok = self.headers.get("PRIVATE-TOKEN") == state.token
            if not ok:
                return self._reply(401, {"message": "Bad credentials"})
            if parts.path in ("/github/user", "/gitlab/api/v4/user"):
                if self.command != "GET":
                    return self._reply(405, {"message": "method not allowed"})
                if forge == "github" and state.installation:
                    return self._reply(403, {"message": "Resource not accessible by integration"})
                if forge == "github":
                    return self._reply(200, {"login": state.user["login"], "id": state.user["id"]})
                return self._reply(200, {"id": state.user["id"], "username": state.user["login"]})
            body = None
            if self.command in ("POST", "PATCH", "PUT"):
                if self.headers.get("Content-Type") != "application/json":
                    return self._reply(415, {"message": "expected application/json"})
                try:
                    body = json.loads(raw)
                except ValueError:
                    return self._reply(400, {"message": "invalid JSON"})
                if not isinstance(body, dict) or set(body) != {"body"} or not isinstance(body["body"], str):
                    return self._reply(422, {"message": 'body must be {"body": string}'})
            routes = [(GH_ITEM, "PATCH"), (GH_LIST, None), (GL_ITEM, "PUT"), (GL_LIST, None)]
            for pattern, item_method in routes:
                m = pattern.fullmatch(parts.path)
                if not m:
                    continue
                if item_method:  # update one comment by id
                    if self.command != item_method:
                        return self._reply(405, {"message": "method not allowed"})
                    cid = int(m.groups()[-1])
                    for thread in state.comments.values():
                        for c in thread:
                            if c["id"] == cid:
                                c["body"] = body["body"]
                                return self._reply(200, _render(forge, c))
                    return self._reply(404, {"message": "Not Found"})
                thread = f"{forge}:" + "/".join(m.groups())
                items = state.comments.setdefault(thread, [])
                if self.command == "GET":
                    q = parse_qs(parts.query)
                    per_page, page = int(q.get("per_page", ["20"])[0]), int(q.get("page", ["1"])[0])
                    shown = items[(page - 1) * per_page : page * per_page]
                    return self._reply(200, [_render(forge, c) for c in shown])
                if self.command == "POST":
                    state.next_id += 1
                    item = {"id": state.next_id, "body": body["body"], "author": state.user}
                    items.append(item)
                    return self._reply(201, _render(forge, item))
                return self._reply(405, {"message": "method not allowed"})
            return self._reply(404, {"message": "Not Found"})

        do_GET = do_POST = do_PATCH = do_PUT = _handle

    return Handler


class running:
    """Context manager: start the double on a free loopback port; yields its ForgeDouble state."""

    def __init__(self, token: str, installation: bool = False):
        self.state = ForgeDouble(token, installation)

    def __enter__(self) -> ForgeDouble:
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self.state))
        self.state.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        return self.state

    def __exit__(self, *exc: Any) -> None:
        self.server.shutdown()
        self.server.server_close()
