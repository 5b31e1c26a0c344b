"""rollback: restore an environment's previous promotion record from git history, as a new change.

The current record names its predecessor (`previous`: version, uri, sha256). The newest commit in the
record's history whose record is that version with that sha256 is the one restored: its model fields
(name, version, uri, sha256, images, metrics, git_sha) come back verbatim (the image digests it ran
with included; a record from before images were recorded restores `{}`: the values' images); promoted_at/promoted_by say who rolled
back and when, and `previous` points at the record rolled back from, so a second rollback undoes the first
(like `git revert`). The version is checked in the registry exactly as a promotion is (gate passed,
weights match); the change is committed (or proposed as a merge request for a protected environment)
and the alias `<env>` follows, all through `promote.apply`.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import yaml

from mlops.errors import PromotionRefused
from mlops.gitops import promote as prom
from mlops.gitops import record as rec

log = logging.getLogger(__name__)


def find_in_history(repo: Path, relpath: str, version: str, sha256: str) -> tuple[str, dict[str, Any]] | None:
    """(commit, record) of the newest commit whose record at `relpath` is `version` with `sha256`."""
    for commit in prom.git(repo, "log", "--format=%H", "--", relpath).split():
        text = prom.git(repo, "show", f"{commit}:{relpath}", check=False)
        try:
            data = yaml.safe_load(text) if text else None
        except yaml.YAMLError:
            continue
        if isinstance(data, dict) and str(data.get("version")) == version and data.get("sha256") == sha256:
            return commit, data
    return None


def rollback(repo: Path, env: str, by: str | None = None, push: bool = False) -> dict[str, Any]:
    """Restore the previous record of `env`, holding the checkout's promotion lock (see `_rollback`)."""
    root = prom.repo_root(repo)
    with prom.checkout_lock(root):
        return _rollback(root, env, by, push)


def _rollback(repo: Path, env: str, by: str | None = None, push: bool = False) -> dict[str, Any]:
    """Restore the previous record of `env` (see the module docstring).

    Returns:
        promote.apply's result plus `restored_from` (the commit the record was taken from).

    Raises:
        PromotionRefused: no record, no previous version, the previous record is not in git history, or the
            registry refuses it now (exit 6); nothing written.
    """
    repo = prom.repo_root(repo)
    path = rec.record_path(repo, env)
    relpath = rec.record_path(Path("."), env).as_posix()
    rec.load_settings(repo / rec.SETTINGS).env(env, repo / rec.SETTINGS)
    current = rec.read(path)
    if current is None:
        raise PromotionRefused(f"{relpath}: no promotion record; nothing to roll back")
    prev = rec.pointer(current.previous) if isinstance(current.previous, dict) else None
    if not prev:
        raise PromotionRefused(
            f"{relpath}: version {current.version} has no previous version to roll back to"
        )
    found = find_in_history(repo, relpath, prev["version"], prev["sha256"])
    if found is None:
        raise PromotionRefused(
            f"{relpath}: previous version {prev['version']} (sha256 {prev['sha256'][:12]}…) "
            "is not in this file's git history"
        )
    commit, old = found
    facts = prom.verify_version(old["name"], prev["version"])
    if facts["sha256"] != prev["sha256"]:
        raise PromotionRefused(
            f"{relpath}: registry version {prev['version']} now holds weights {facts['sha256'][:12]}…, "
            f"not the recorded {prev['sha256'][:12]}…"
        )
    restored = {k: old.get(k) for k in ("name", "version", "uri", "sha256", "images", "metrics", "git_sha")}
    new = {
        **restored,
        "images": restored["images"] or {},
        "version": str(restored["version"]),
        "promoted_at": prom.now(),
        "promoted_by": prom.promoted_by(by, repo),
        "previous": rec.pointer(current),
    }
    message = prom.commit_message(
        "rollback",
        env,
        {**restored, "version": prev["version"], "dvc_lock_md5": facts["dvc_lock_md5"]},
        rec.pointer(current),
    )
    message += f"restored from: {commit}\n"
    result = prom.apply(repo, env, new, message, push, "rollback")
    if result["action"] == "committed":
        prom.set_alias(restored["name"], env, prev["version"])
    log.info("rollback: %s %s version %s -> %s", env, current.name, current.version, prev["version"])
    return {**result, "restored_from": commit}
