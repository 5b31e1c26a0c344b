"""promote: a registered model version -> deploy/envs/<env>/model.yaml, by a git commit or a merge request.

`promote()` checks the version in the MLflow registry before anything is written: it exists, its tag
`gate` is `passed`, and the weights stored in the registry hash to its `weights_sha256` tag (the files
are downloaded and verified as the init container would). Then, when the env already runs another
version, the champion comparison (`mlops.compare`, params.yaml `champion`) judges the candidate against
it at this moment: both are fetched from the registry (the record's sha256 checked), both score the
candidate version's labelled test rows (`evaluation.parquet`), and a significant regression beyond
`champion.max_regression` is refused with the metric, the point difference, the interval and the bound.
Any failure refuses the promotion (exit 6) and leaves the record, the git history and the alias
untouched. A rollback restores a version that already ran there and is not compared.

Then it writes the record atomically and commits it with a message carrying the version, the metrics and
the dvc.lock md5. An unprotected environment (deploy/promotion.yaml) is committed on the current branch
(`--push` sends it to the tracked branch, as CI does); a protected one gets a branch
`promote/<env>/<name>-<version>`, pushed, and a merge request into the tracked branch on GitHub or
GitLab. The record carries the version's images by digest (its `image.*` registry tags; `{}` without
them: the env's values.yaml images run). The MLflow alias `<env>` mirrors git: it moves when the record
is committed to the tracked branch; for a protected environment, `mlops sync-aliases` on the tracked
branch after the merge moves it (main's ci-promote runs it; so does rerunning the same promotion, a no-op
on git). Promoting the version already recorded changes nothing in git (the alias is synced to it).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import getpass
import logging
import os
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlops import registry, tracking
from mlops.errors import ChecksumMismatch, ConfigError, ModelNotReady, PromotionRefused
from mlops.gitops import record as rec
from mlops.records import PromotionRecord

if TYPE_CHECKING:  # pydantic's params classes: rollback runs without params.yaml
    from mlops.params.champion import ChampionParams

log = logging.getLogger(__name__)


# ---------------------------------------------------------------- git
def git(repo: Path, *args: str, check: bool = True) -> str:
    """Run git in `repo` and return its stdout; ConfigError with git's message on failure."""
    identity: list[str] = []
    if not os.environ.get("GIT_COMMITTER_EMAIL"):
        have = subprocess.run(["git", "config", "user.email"], cwd=repo, capture_output=True, text=True)
        if not have.stdout.strip():  # a bare CI runner has no identity; a commit still needs one
            identity = ["-c", "user.name=mlops promote", "-c", "user.email=mlops-promote@localhost"]
    try:
        out = subprocess.run(["git", *identity, *args], cwd=repo, capture_output=True, text=True, timeout=300)
    except (OSError, subprocess.TimeoutExpired) as e:
        raise ConfigError(f"{repo}: git {args[0]} failed ({e})") from e
    if check and out.returncode != 0:
        # git writes some refusals ("nothing to commit") on stdout: name whichever it gave
        reason = (out.stderr.strip() or out.stdout.strip() or f"exit {out.returncode}")[-500:]
        raise ConfigError(f"{repo}: git {' '.join(args[:2])} failed: {reason}")
    return out.stdout


@contextlib.contextmanager
def checkout_lock(repo: Path) -> Iterator[None]:
    """Serialise promotions and rollbacks in one checkout (an exclusive lock on a file in its git dir).

    Two promotions started together (two CI jobs on one runner, a person and a job) would otherwise both
    read the same record and race to commit it; with the lock the second reads what the first committed
    (the same version: nothing to change; another one: compared with it).
    """
    import fcntl

    git_dir = Path(git(repo, "rev-parse", "--absolute-git-dir").strip())
    with open(git_dir / "mlops-promote.lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def repo_root(path: Path) -> Path:
    """The top level of the git checkout holding `path` (ConfigError if it is not one)."""
    out = subprocess.run(
        ["git", "rev-parse", "--show-toplevel"], cwd=path, capture_output=True, text=True, timeout=30
    )
    if out.returncode != 0:
        raise ConfigError(f"{path}: not a git checkout ({out.stderr.strip()})")
    return Path(out.stdout.strip())


def promoted_by(explicit: str | None, repo: Path) -> str:
    """Who promotes: --by, else the CI's user variable, else git's user.email, else the OS user."""
    for value in (
        explicit,
        os.environ.get("MLOPS_PROMOTED_BY"),
        os.environ.get("GITLAB_USER_LOGIN"),
        os.environ.get("GITHUB_ACTOR"),
        os.environ.get("BUILD_USER_ID"),  # Jenkins (build-user-vars plugin)
        os.environ.get("GIT_AUTHOR_EMAIL"),
        git(repo, "config", "user.email", check=False).strip(),
    ):
        if value:
            return value
    return getpass.getuser()


def now() -> str:
    """UTC time, ISO 8601 to the second (`2026-12-01T22:00:00Z`)."""
    return dt.datetime.now(dt.UTC).replace(microsecond=0).isoformat().replace("+00:00", "Z")


# ---------------------------------------------------------------- registry checks
def verify_version(name: str, version: str, dest: Path | None = None) -> dict[str, Any]:
    """Check a registry version may be promoted; return its facts.

    Args:
        name: registered model name.
        version: version number or alias.
        dest: keep the fetched, verified files here (default: a temp dir, removed).

    Returns:
        {name, version, uri, sha256, images, metrics, git_sha, dvc_lock_md5}: images from the version's
        `image.*` tags ({} without them).

    Raises:
        PromotionRefused: unknown version, gate not passed, model files missing (exit 6).
        ChecksumMismatch: the stored weights do not hash to the `weights_sha256` tag (exit 6).
        ModelNotReady: the registry does not answer (exit 5).
    """
    c = registry.client()
    try:
        mv = (
            c.get_model_version(name, version)
            if version.isdigit()
            else c.get_model_version_by_alias(name, version)
        )
    except Exception as e:
        if registry._is_not_found(e):
            raise PromotionRefused(f"model {name!r} version {version!r}: not found in the registry") from e
        uri = registry.safe_uri(tracking.tracking_uri())
        raise ModelNotReady(f"registry {uri} unavailable ({registry._short(e)})") from e
    tags = mv.tags or {}
    where = f"model {name!r} version {mv.version}"
    if tags.get("gate") != "passed":
        raise PromotionRefused(
            f"{where}: tag gate={tags.get('gate', '(missing)')!r}; only gate=passed is promoted"
        )
    with tempfile.TemporaryDirectory(prefix="mlops-promote-") as tmp:
        try:
            fetched = registry.fetch_model(name, str(mv.version), dest or Path(tmp), evaluation=True)
        except ModelNotReady as e:
            raise PromotionRefused(f"{where}: model files unavailable ({e})") from e
        except ChecksumMismatch as e:
            raise ChecksumMismatch(f"{where}: refused, {e}") from e
    metrics = {}
    for key, value in sorted(tags.items()):
        if key.startswith("metric."):
            try:
                metrics[key.removeprefix("metric.")] = float(value)
            except ValueError:
                metrics[key.removeprefix("metric.")] = value
    return {
        "name": name,
        "version": str(mv.version),
        "uri": f"models:/{name}/{mv.version}",
        "sha256": fetched["sha256"],
        "images": registry.version_images(tags),
        "metrics": metrics,
        "git_sha": tags.get("git_sha", "unknown"),
        "dvc_lock_md5": tags.get("dvc_lock_md5", "unknown"),
    }


def set_alias(name: str, env: str, version: str) -> None:
    """Point the MLflow alias `<env>` at `version` (the mirror of the committed record)."""
    c = registry.client()
    try:
        c.set_registered_model_alias(name, env, version)
    except Exception as e:
        raise registry.RegistryUnavailable(
            f"the record is committed but alias {env!r} of {name!r} was not moved to {version} "
            f"({registry._short(e)}); rerun the promotion to sync it"
        ) from e
    log.info("promote: alias %s of %s -> version %s", env, name, version)


# ---------------------------------------------------------------- the change
def commit_message(
    verb: str,
    env: str,
    facts: dict[str, Any],
    previous: dict[str, Any] | None,
    comparison: dict[str, Any] | None = None,
) -> str:
    """Subject + body: version, uri, sha256, metrics, dvc.lock md5, the model's commit, the previous, and
    the champion comparison with it when one ran."""
    metrics = ", ".join(
        f"{k}={v:.4f}" if isinstance(v, float) else f"{k}={v}"
        for k, v in (facts.get("metrics") or {}).items()
    )
    before = f"version {previous['version']} (sha256 {previous['sha256'][:12]})" if previous else "none"
    compared = f"champion comparison: {_summary(comparison)}\n" if comparison else ""
    return (
        f"{verb}({env}): {facts['name']} version {facts['version']}\n\n"
        f"model: {facts['uri']}\n"
        f"sha256: {facts['sha256']}\n"
        f"images: {_images(facts.get('images'))}\n"
        f"metrics: {metrics or 'none'}\n"
        f"dvc.lock md5: {facts.get('dvc_lock_md5', 'unknown')}\n"
        f"model git sha: {facts['git_sha']}\n"
        f"previous: {before}\n"
        f"{compared}"
    )


def _images(images: dict[str, str] | None) -> str:
    """The record's images for a commit message; none: the env's values.yaml images."""
    if not images:
        return "none recorded with this version (the env's values.yaml images)"
    return ", ".join(f"{k}={v}" for k, v in sorted(images.items()))


def _summary(comparison: dict[str, Any]) -> str:
    """One line: each compared metric's difference and interval against the previous version."""
    parts = [
        f"{r['metric']} Δ {r['diff']:+.4f}"
        + (f" ({comparison['confidence']:.0%} CI [{r['ci'][0]:+.4f}, {r['ci'][1]:+.4f}])" if r["ci"] else "")
        for r in comparison["metrics"]
        if "verdict" in r and r["diff"] is not None
    ]
    return f"no significant regression on {comparison['rows']} rows: " + ", ".join(parts)


def apply(
    repo: Path,
    env: str,
    new: dict[str, Any],
    message: str,
    push: bool,
    branch_prefix: str,
) -> dict[str, Any]:
    """Write the record and commit it (unprotected env) or open a merge request (protected env).

    Returns:
        {action: committed|merge-request, env, name, version, record, commit, branch?, merge_request?}.
    """
    from mlops import review_comment

    settings_path = repo / rec.SETTINGS
    settings = rec.load_settings(settings_path)
    protected = settings.env(env, settings_path).protected
    relpath = rec.record_path(Path("."), env).as_posix()
    result: dict[str, Any] = {
        "env": env,
        "name": new["name"],
        "version": str(new["version"]),
        "record": relpath,
    }
    if not protected:
        rec.write(repo / relpath, new)
        git(repo, "add", "--", relpath)
        git(repo, "commit", "--quiet", "-m", message, "--", relpath)
        result.update(action="committed", commit=git(repo, "rev-parse", "HEAD").strip())
        if push:
            git(repo, "push", "--quiet", settings.remote, f"HEAD:refs/heads/{settings.branch}")
            result["pushed"] = f"{settings.remote}/{settings.branch}"
        log.info(
            "promote: %s committed %s version %s (%s)",
            relpath,
            new["name"],
            new["version"],
            result["commit"][:12],
        )
        return result
    review_comment.repository_api()  # no forge configured: refuse before anything is pushed
    branch = f"{branch_prefix}/{env}/{new['name']}-{new['version']}"
    with tempfile.TemporaryDirectory(prefix="mlops-promote-wt-") as tmp:
        tree = Path(tmp) / "tree"
        git(repo, "worktree", "add", "--quiet", "-B", branch, str(tree), "HEAD")
        try:
            rec.write(tree / relpath, new)
            git(tree, "add", "--", relpath)
            git(tree, "commit", "--quiet", "-m", message, "--", relpath)
            commit = git(tree, "rev-parse", "HEAD").strip()
            git(tree, "push", "--quiet", "--force", settings.remote, f"{branch}:refs/heads/{branch}")
        finally:
            git(repo, "worktree", "remove", "--force", str(tree), check=False)
    title, _, body = message.partition("\n\n")
    mr = review_comment.open_merge_request(branch, settings.branch, title, body)
    log.info("promote: %s merge request %s (%s) from %s", env, mr["id"], mr["action"], branch)
    return {**result, "action": "merge-request", "commit": commit, "branch": branch, "merge_request": mr}


def promote(
    repo: Path,
    env: str,
    version: str,
    name: str | None,
    default_name: str,
    by: str | None = None,
    push: bool = False,
    *,
    champion: ChampionParams,
    bins: int,
) -> dict[str, Any]:
    """Promote a registry version to `env`, holding the checkout's promotion lock (see `_promote`)."""
    root = repo_root(repo)
    with checkout_lock(root):
        return _promote(root, env, version, name, default_name, by, push, champion=champion, bins=bins)


def _promote(
    repo: Path,
    env: str,
    version: str,
    name: str | None,
    default_name: str,
    by: str | None = None,
    push: bool = False,
    *,
    champion: ChampionParams,
    bins: int,
) -> dict[str, Any]:
    """Promote a registry version to `env` (see the module docstring).

    Args:
        repo: a path inside the git checkout (deploy/ at its top level).
        env: environment (a folder under deploy/envs/ declared in deploy/promotion.yaml).
        version: version number or alias (e.g. `candidate`).
        name: registered model name; default: the env's current record's name, else `default_name`.
        default_name: params.yaml `train.model_name`.
        by: who promotes (default from the CI's variables or git).
        push: push the commit of an unprotected env to the tracked branch.
        champion: params.yaml `champion` (the comparison with the env's current version).
        bins: params.yaml `evaluate.calibration_bins` (ece).

    Returns:
        {action: committed|merge-request|unchanged, env, name, version, record, ...}; `comparison`
        holds the champion comparison when one ran.

    Raises:
        PromotionRefused, ChecksumMismatch: refused (exit 6), a significant regression included;
            nothing written.
        ModelNotReady: the registry does not answer, or lacks the current record's version (exit 5).
        ConfigError: unknown env, bad settings, git failure (exit 2).
    """
    repo = repo_root(repo)
    settings_path = repo / rec.SETTINGS
    rec.load_settings(settings_path).env(env, settings_path)  # an undeclared env: exit 2 before any work
    path = rec.record_path(repo, env)
    current: PromotionRecord | None = rec.read(path)
    name = name or (current.name if current else default_name)
    with tempfile.TemporaryDirectory(prefix="mlops-promote-") as tmp:
        candidate_dir = Path(tmp) / "candidate"
        facts = verify_version(name, str(version), candidate_dir)
        if (
            current
            and current.name == name
            and current.version == facts["version"]
            and current.sha256 == facts["sha256"]
            and (current.images or {}) == facts["images"]
        ):
            log.info("promote: %s already runs %s version %s; nothing to change", env, name, facts["version"])
            # the committed record names it (after a merged merge request, say): the alias mirrors git
            relpath = rec.record_path(Path("."), env).as_posix()
            if not git(repo, "status", "--porcelain", "--", relpath).strip():
                set_alias(name, env, facts["version"])
            return {"action": "unchanged", "env": env, "name": name, "version": facts["version"]}
        comparison = None
        if current is not None:  # judged now, against what the env runs now; refused before any write
            from mlops import compare

            comparison = compare.at_promotion(champion, bins, candidate_dir, facts, current, path, env)
            if not comparison["passed"]:
                raise PromotionRefused(
                    compare.refusal(comparison, f"model {name!r} version {facts['version']}")
                )
    previous = rec.pointer(current)
    new = {
        **{k: facts[k] for k in ("name", "version", "uri", "sha256", "images", "metrics", "git_sha")},
        "promoted_at": now(),
        "promoted_by": promoted_by(by, repo),
        "previous": previous,
    }
    message = commit_message("promote", env, facts, previous, comparison)
    result = apply(repo, env, new, message, push, "promote")
    if result["action"] == "committed":
        set_alias(name, env, facts["version"])
    if comparison is not None:
        result["comparison"] = {
            k: comparison[k] for k in ("passed", "rows", "confidence", "resamples", "champion")
        } | {"metrics": [r for r in comparison["metrics"] if "verdict" in r]}
    return result
