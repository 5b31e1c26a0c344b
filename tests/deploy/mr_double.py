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

import json
import re
import subprocess
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

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
    requests: list[dict[str, Any]] = field(default_factory=list)
    url: str = ""


def _branch_exists(remote: Path, branch: str) -> bool:
    ref = subprocess.run(
        ["git", "rev-parse", "--verify", f"refs/heads/{branch}"], cwd=remote, capture_output=True
    )
    return ref.returncode == 0


def _handler(state: MrDouble) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
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
            raw = self.rfile.read(int(self.headers.get("Content-Length") or 0))
            q = {k: v[0] for k, v in parse_qs(parts.query).items()}
            state.requests.append(
                {"method": self.command, "path": parts.path, "query": q, "body": raw.decode()}
            )
            gh, gl = GH.fullmatch(parts.path), GL.fullmatch(parts.path)
            if not (gh or gl):
                return self._reply(404, {"message": "Not Found"})
            forge = "github" if gh else "gitlab"
            if forge == "github":
                ok = self.headers.get("Authorization") == f"Bearer {state.token}"
            else:
                ok = self.headers.get("PRIVATE-TOKEN") == state.token
            if not ok:
                return self._reply(401, {"message": "Bad credentials"})
            mine = [m for m in state.merge_requests if m["forge"] == forge and m["state"] == "open"]
            head_key, base_key = ("head", "base") if forge == "github" else ("source_branch", "target_branch")
            if self.command == "GET":
                want_head = q.get(head_key, "")
                if forge == "github":  # `owner:branch`
                    want_head = want_head.split(":", 1)[-1]
                found = [
                    m
                    for m in mine
                    if (not want_head or m["source"] == want_head)
                    and (not q.get(base_key) or m["target"] == q[base_key])
                ]
                return self._reply(200, [m["api"] for m in found])
            if self.command != "POST":
                return self._reply(405, {"message": "method not allowed"})
            if self.headers.get("Content-Type") != "application/json":
                return self._reply(415, {"message": "expected application/json"})
            try:
                body = json.loads(raw)
            except ValueError:
                return self._reply(400, {"message": "invalid JSON"})
            missing = REQUIRED[forge] - set(body)
            if missing:
                return self._reply(422, {"message": f"missing {sorted(missing)}"})
            source, target = body[head_key], body[base_key]
            if not _branch_exists(state.remote, source):
                return self._reply(422, {"message": f"head branch {source} not found"})
            if any(m["source"] == source and m["target"] == target for m in mine):
                return self._reply(422, {"message": "A pull request already exists"})
            number = len(state.merge_requests) + 1
            api = (
                {"number": number, "html_url": f"{state.url}/pull/{number}", "title": body["title"]}
                if forge == "github"
                else {
                    "iid": number,
                    "web_url": f"{state.url}/-/merge_requests/{number}",
                    "title": body["title"],
                }
            )
            state.merge_requests.append(
                {
                    "forge": forge,
                    "state": "open",
                    "source": source,
                    "target": target,
                    "body": body,
                    "api": api,
                }
            )
            return self._reply(201, api)

        do_GET = do_POST = do_PUT = do_PATCH = _handle

    return Handler


class running:
    """Context manager: start the double on a free loopback port; yields its MrDouble state."""

    def __init__(self, token: str, remote: Path):
        self.state = MrDouble(token, remote)

    def __enter__(self) -> MrDouble:
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(self.state))
        self.state.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()
        return self.state

    def __exit__(self, *exc: Any) -> None:
        self.server.shutdown()
        self.server.server_close()
