"""TEST DOUBLE (not a real CI system): the three APIs `mlops trigger-retrain` calls, on 127.0.0.1 only.

- GitHub (`/github`): `POST /repos/{owner}/{repo}/actions/workflows/{workflow}/dispatches` with JSON
  `{ref, inputs}` (204, no body; 422 for a ref that does not exist or an input the workflow does not
  declare) and `GET .../workflows/{workflow}/runs?created=>=ISO` (`{total_count, workflow_runs: [...]}`);
  auth `Authorization: Bearer <token>` and `Accept: application/vnd.github+json`, else 401.
- GitLab (`/gitlab/api/v4`): `POST /projects/{id}/trigger/pipeline` with `{token, ref, variables}` (a JSON
  body, as the API accepts besides form fields; 404 for a wrong trigger token, 400 for an unknown ref;
  201 with the pipeline) and `GET /projects/{id}/pipelines?source=&ref=&updated_after=` with
  `PRIVATE-TOKEN` (a trigger token cannot list pipelines: 401).
- Jenkins (`/jenkins`): `GET /crumbIssuer/api/json` (404 when CSRF protection is off),
  `POST /job/.../buildWithParameters?RETRAIN_REASON=` with HTTP basic auth (401) and the crumb header
  (403 "No valid crumb" without it; 201 + Location of the queue item), and
  `GET /job/.../api/json?tree=builds[...]` (builds with their parameters, timestamps in epoch ms).

Every started run is recorded with its provider, ref, reason and time; runs can be seeded (a run started
earlier) and `fail` makes the trigger endpoints answer that status. Not imitated: permissions beyond the
token, rate limits, pagination, the asynchronous start of a dispatched GitHub run (the double lists it at
once).
"""

from __future__ import annotations

import base64
import datetime as dt
import re
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import unquote

from http_double import Reply, Request, Served, json_body

GH_DISPATCH = re.compile(r"/github/repos/([^/]+)/([^/]+)/actions/workflows/([^/]+)/dispatches")
GH_RUNS = re.compile(r"/github/repos/([^/]+)/([^/]+)/actions/workflows/([^/]+)/runs")
GL_TRIGGER = re.compile(r"/gitlab/api/v4/projects/([^/]+)/trigger/pipeline")
GL_PIPELINES = re.compile(r"/gitlab/api/v4/projects/([^/]+)/pipelines")
JK_BUILD = re.compile(r"/jenkins((?:/job/[^/]+)+)/buildWithParameters")
JK_JOB = re.compile(r"/jenkins((?:/job/[^/]+)+)/api/json")

JENKINS_CRUMB = "c0ffee-crumb"


def iso(t: dt.datetime) -> str:
    return t.astimezone(dt.UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


@dataclass
class CiDouble:
    """State: the credentials each API accepts, the refs that exist, the runs started, the requests."""

    token: str = "s3cr3t-token"  # GitHub token / GitLab trigger token / Jenkins API token
    api_token: str = "gl-api-token"  # GitLab PRIVATE-TOKEN (read_api)
    jenkins_user: str = "mlops-bot"
    refs: tuple[str, ...] = ("main",)
    workflow_inputs: tuple[str, ...] = ("reason",)  # the retrain workflow's declared inputs
    crumb: bool = True  # Jenkins CSRF protection on
    fail: int | None = None  # answer trigger calls with this status
    runs: list[dict[str, Any]] = field(default_factory=list)
    requests: list[Request] = field(default_factory=list)
    url: str = ""

    def seed(self, provider: str, started: dt.datetime, reason: str = "earlier", ref: str = "main") -> None:
        """A run started earlier (e.g. within the cooldown window)."""
        self._start(provider, ref, reason, started)

    def started(self, provider: str | None = None) -> list[dict[str, Any]]:
        """Runs started through the trigger endpoints (seeded ones excluded)."""
        return [r for r in self.runs if not r["seeded"] and provider in (None, r["provider"])]

    def _start(self, provider: str, ref: str, reason: str, when: dt.datetime | None = None) -> dict[str, Any]:
        n = len(self.runs) + 1
        run = {
            "id": n,
            "provider": provider,
            "ref": ref,
            "reason": reason,
            "created": when or dt.datetime.now(dt.UTC),
            "seeded": when is not None,
            "url": f"{self.url}/{provider}/runs/{n}",
        }
        self.runs.append(run)
        return run

    def _mine(self, provider: str) -> list[dict[str, Any]]:
        return [r for r in self.runs if r["provider"] == provider]

    # ------------------------------------------------------------------ dispatch
    def handle(self, req: Request) -> Reply:
        if req.path.startswith("/github/"):
            return self._github(req)
        if req.path.startswith("/gitlab/"):
            return self._gitlab(req)
        if req.path.startswith("/jenkins"):
            return self._jenkins(req)
        return Reply(404, {"message": "Not Found"})

    def _github(self, req: Request) -> Reply:
        auth = req.headers.get("authorization") == f"Bearer {self.token}"
        if not auth or req.headers.get("accept") != "application/vnd.github+json":
            return Reply(401, {"message": "Bad credentials"})
        if GH_DISPATCH.fullmatch(req.path):
            if req.method != "POST":
                return Reply(404, {"message": "Not Found"})
            if self.fail:
                return Reply(self.fail, {"message": "failure injected by the test"})
            body, bad = json_body(req)
            if bad:
                return bad
            if not isinstance(body, dict) or not isinstance(body.get("ref"), str):
                return Reply(422, {"message": "Invalid request. ref is required"})
            if body["ref"] not in self.refs:
                return Reply(422, {"message": f"No ref found for: {body['ref']}"})
            inputs = body.get("inputs") or {}
            unexpected = sorted(set(inputs) - set(self.workflow_inputs))
            if unexpected:
                return Reply(422, {"message": f"Unexpected inputs provided: {unexpected}"})
            self._start("github", body["ref"], inputs.get("reason", ""))
            return Reply(204)
        if GH_RUNS.fullmatch(req.path) and req.method == "GET":
            since = req.first("created").removeprefix(">=")
            low = dt.datetime.fromisoformat(since.replace("Z", "+00:00")) if since else None
            runs = [r for r in self._mine("github") if low is None or r["created"] >= low]
            shown = [
                {
                    "id": r["id"],
                    "event": "workflow_dispatch",
                    "status": "in_progress",
                    "head_branch": r["ref"],
                    "created_at": iso(r["created"]),
                    "html_url": r["url"],
                }
                for r in reversed(runs)
            ]
            return Reply(200, {"total_count": len(shown), "workflow_runs": shown})
        return Reply(404, {"message": "Not Found"})

    def _gitlab(self, req: Request) -> Reply:
        if GL_TRIGGER.fullmatch(req.path) and req.method == "POST":
            if self.fail:
                return Reply(self.fail, {"message": "failure injected by the test"})
            body, bad = json_body(req)
            if bad:
                return bad
            if not isinstance(body, dict) or body.get("token") != self.token:
                return Reply(404, {"message": "404 Not Found"})
            if body.get("ref") not in self.refs:
                return Reply(400, {"message": {"base": ["Reference not found"]}})
            variables = body.get("variables") or {}
            if not isinstance(variables, dict) or not all(isinstance(v, str) for v in variables.values()):
                return Reply(400, {"message": "variables is invalid"})
            run = self._start("gitlab", body["ref"], variables.get("MLOPS_RETRAIN_REASON", ""))
            run["variables"] = variables
            return Reply(
                201,
                {
                    "id": run["id"],
                    "status": "created",
                    "ref": run["ref"],
                    "source": "trigger",
                    "web_url": run["url"],
                },
            )
        m = GL_PIPELINES.fullmatch(req.path)
        if m and req.method == "GET":
            if req.headers.get("private-token") != self.api_token:
                return Reply(401, {"message": "401 Unauthorized"})
            after = req.first("updated_after")
            low = dt.datetime.fromisoformat(after.replace("Z", "+00:00")) if after else None
            runs = [
                r
                for r in self._mine("gitlab")
                if (low is None or r["created"] >= low) and req.first("ref", r["ref"]) == r["ref"]
            ]
            if req.first("source") not in ("", "trigger"):
                runs = []
            return Reply(
                200,
                [
                    {
                        "id": r["id"],
                        "project_id": unquote(m.group(1)),
                        "ref": r["ref"],
                        "source": "trigger",
                        "created_at": iso(r["created"]),
                        "web_url": r["url"],
                    }
                    for r in reversed(runs)
                ],
            )
        return Reply(404, {"message": "404 Not Found"})

    def _jenkins(self, req: Request) -> Reply:
        expected = base64.b64encode(f"{self.jenkins_user}:{self.token}".encode()).decode()
        if req.headers.get("authorization") != f"Basic {expected}":
            return Reply(401, {"message": "Unauthorized"})
        if req.path == "/jenkins/crumbIssuer/api/json" and req.method == "GET":
            if not self.crumb:
                return Reply(404, {"message": "Not Found"})
            return Reply(200, {"crumb": JENKINS_CRUMB, "crumbRequestField": "Jenkins-Crumb"})
        m = JK_BUILD.fullmatch(req.path)
        if m and req.method == "POST":
            if self.crumb and req.headers.get("jenkins-crumb") != JENKINS_CRUMB:
                return Reply(403, {"message": "No valid crumb was included in the request"})
            if self.fail:
                return Reply(self.fail, {"message": "failure injected by the test"})
            run = self._start("jenkins", "main", req.first("RETRAIN_REASON"))
            run["job"] = m.group(1)
            return Reply(201, None, {"Location": f"{self.url}/jenkins/queue/item/{run['id']}/"})
        if JK_JOB.fullmatch(req.path) and req.method == "GET":
            builds = [
                {
                    "number": r["id"],
                    "url": r["url"],
                    "timestamp": int(r["created"].timestamp() * 1000),
                    "actions": [
                        {"_class": "hudson.model.CauseAction"},
                        {
                            "_class": "hudson.model.ParametersAction",
                            "parameters": [{"name": "RETRAIN_REASON", "value": r["reason"]}],
                        },
                    ],
                }
                for r in reversed(self._mine("jenkins"))
            ]
            return Reply(200, {"builds": builds})
        return Reply(404, {"message": "Not Found"})


def running(**kwargs: Any) -> Served:
    """Context manager: the CI double on a free loopback port."""
    return Served(CiDouble(**kwargs))
