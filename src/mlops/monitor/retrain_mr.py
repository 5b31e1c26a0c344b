"""retrain_mr: the retrain job's last step: its reproduced pipeline -> a branch `retrain/<date>` and a review
merge request. A retrain never deploys by itself.

`make ci-retrain` (a schedule, a `workflow_dispatch`, a GitLab trigger or a Jenkins parameterised build,
started by hand or by `mlops trigger-retrain`) re-fingerprints the source and runs `dvc repro` (the gate
included: a failing candidate fails the job and opens nothing) and pushes the outputs to the DVC remote.
Then `mlops retrain-mr` commits what the pipeline changed in git (dvc.lock and every other tracked file
it rewrote) on the branch `retrain/<UTC date>` (a git worktree: the job's checkout stays as it was),
force-pushes it, and opens a merge request into the branch the retrain ran on, or finds the open one (a
second retrain on the same day updates the same branch and merge request). The merge request's pipeline
restores the pushed outputs from the run-cache, gates the candidate again and posts the review report;
only its merge registers and promotes the model (main's pipeline). Nothing changed (the data and params
are as the branch already has them): nothing is committed and the command says so.

Git and forge steps are the promotion's (`mlops.gitops.promote.git`, `mlops.review_comment.open_merge_request`).
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import shutil
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from mlops import review_comment
from mlops.gitops import record as rec
from mlops.gitops.promote import git, repo_root

log = logging.getLogger(__name__)

GATE_MD = Path("reports/gate.md")
MAX_GATE = 20000  # characters of the gate table quoted in the description (the report comment has it all)


def changed_files(repo: Path) -> list[tuple[str, str]]:
    """Tracked files the pipeline changed: [(status, path)] with status `M` (modified) or `D` (deleted)."""
    out = git(repo, "status", "--porcelain=v1", "-z", "--untracked-files=no")
    changes = []
    entries = out.split("\0")
    i = 0
    while i < len(entries):
        entry = entries[i]
        i += 1
        if len(entry) < 4:
            continue
        code, path = entry[:2], entry[3:]
        if "R" in code or "C" in code:  # renames carry the old path next; a pipeline does not rename
            i += 1
        changes.append(("D" if "D" in code else "M", path))
    return sorted(changes, key=lambda c: c[1])


def run_url(env: Mapping[str, str]) -> str | None:
    """The web URL of this CI run (GitLab, GitHub Actions, Jenkins), when known."""
    if env.get("CI_PIPELINE_URL"):
        return env["CI_PIPELINE_URL"]
    if env.get("GITHUB_RUN_ID") and env.get("GITHUB_REPOSITORY"):
        server = env.get("GITHUB_SERVER_URL", "https://github.com")
        return f"{server}/{env['GITHUB_REPOSITORY']}/actions/runs/{env['GITHUB_RUN_ID']}"
    return env.get("BUILD_URL") or None


def describe(repo: Path, reason: str, changes: list[tuple[str, str]], env: Mapping[str, str]) -> str:
    """The merge request's description: why, where it ran, what changed, the gate table."""
    lines = [
        f"Retraining requested: **{reason}**",
        "",
        f"Retrain run: {run_url(env) or '(not in CI)'}",
        "",
        "This merge request is the retrained candidate. Its pipeline restores the pushed pipeline outputs,",
        "gates the candidate again and posts the review report. Nothing is registered or deployed until it",
        "is merged.",
        "",
        "Changed files:",
        *[f"- `{path}`" + (" (deleted)" if status == "D" else "") for status, path in changes],
    ]
    gate = repo / GATE_MD
    if gate.is_file():
        lines += ["", "Gate (retrain run):", "", gate.read_text(encoding="utf-8")[:MAX_GATE]]
    return "\n".join(lines) + "\n"


def open_retrain_mr(
    repo: Path,
    reason: str,
    target: str,
    push: bool = True,
    env: Mapping[str, str] = os.environ,
    today: dt.date | None = None,
) -> dict[str, Any]:
    """Commit the pipeline's changes to `retrain/<date>`, push it, open (or find) the merge request.

    Args:
        repo: a path in the git checkout the pipeline ran in.
        reason: why the retrain ran (title and description).
        target: the branch the merge request goes into (params.yaml `retrain.ref`).
        push: push and open the merge request; False only commits the branch (local runs, tests).
        env: the CI environment (forge variables and tokens, the run URL).
        today: the branch date (tests).

    Returns:
        {action: unchanged|committed|merge-request, branch?, commit?, files?, merge_request?}.

    Raises:
        ConfigError: not a git checkout, git failed, or no forge configured when pushing (exit 2).
        review_comment.ForgeError: the forge refused the merge request (the token never in the message).
    """
    repo = repo_root(repo)
    changes = changed_files(repo)
    if not changes:
        log.info(
            "retrain-mr: the pipeline changed no tracked file (data and params as committed): no merge request"
        )
        return {"action": "unchanged"}
    settings = rec.load_settings(repo / rec.SETTINGS)
    if push:
        review_comment.repository_api(env)  # no forge configured: refuse before anything is pushed
    branch = f"retrain/{(today or dt.datetime.now(dt.UTC).date()).isoformat()}"
    reason = " ".join(reason.split()) or "unspecified"
    title = f"retrain: {reason}"[:250]
    description = describe(repo, reason, changes, env)
    with tempfile.TemporaryDirectory(prefix="mlops-retrain-wt-") as tmp:
        tree = Path(tmp) / "tree"
        git(repo, "worktree", "add", "--quiet", "--detach", str(tree), "HEAD")
        try:
            git(tree, "checkout", "--quiet", "-B", branch)
            for status, path in changes:
                if status == "D":
                    git(tree, "rm", "--quiet", "--", path)
                else:
                    (tree / path).parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(repo / path, tree / path)
                    git(tree, "add", "--", path)
            git(tree, "commit", "--quiet", "-m", f"{title}\n\n{description}")
            commit = git(tree, "rev-parse", "HEAD").strip()
            if push:
                git(tree, "push", "--quiet", "--force", settings.remote, f"{branch}:refs/heads/{branch}")
        finally:
            git(repo, "worktree", "remove", "--force", str(tree), check=False)
            if push:  # the pushed branch is the record; a local one would only go stale
                git(repo, "branch", "-D", branch, check=False)
    files = [path for _, path in changes]
    result: dict[str, Any] = {"branch": branch, "commit": commit, "files": files}
    if not push:
        log.info("retrain-mr: committed %s on %s (not pushed)", ", ".join(files), branch)
        return {"action": "committed", **result}
    mr = review_comment.open_merge_request(branch, target, title, description, env)
    log.info("retrain-mr: merge request %s (%s) from %s into %s", mr["id"], mr["action"], branch, target)
    return {"action": "merge-request", **result, "merge_request": mr}
