"""sync: every environment's MLflow alias <- the version of its promotion record in this checkout.

Git is the source of truth; the alias `<env>` mirrors it. A protected environment (production) changes
by a merge request, and its merge is a deploy-only commit on the tracked branch: nothing promotes there,
so main's `ci-promote` runs `mlops sync-aliases`, which points each env's alias at the version its
committed record names. Before moving an alias it checks that the registry's version still holds the
weights the record promised (its `weights_sha256` tag equals the record's sha256): a mismatch refuses
(exit 6) and moves no alias. An alias already in place is left alone; an env without a record is
skipped. Run on an unchanged tree it changes nothing (harmless after a promotion too).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from mlops import registry, tracking
from mlops.errors import ChecksumMismatch, ModelNotReady, PromotionRefused
from mlops.gitops import promote as prom
from mlops.gitops import record as rec

log = logging.getLogger(__name__)


def sync_aliases(repo: Path) -> dict[str, Any]:
    """Point each environment's alias at the version of its record (see the module docstring).

    Args:
        repo: a path inside the git checkout (deploy/ at its top level).

    Returns:
        {envs: {env: {action: moved|unchanged|no-record, name?, version?, previous?}}}.

    Raises:
        ChecksumMismatch: a registry version's weights_sha256 differs from its record's sha256 (exit 6);
            no alias is moved.
        PromotionRefused: a record names a version the registry lacks (exit 6).
        ModelNotReady: the registry does not answer (exit 5).
        ConfigError: bad settings or records (exit 2).
    """
    repo = prom.repo_root(repo)
    settings = rec.load_settings(repo / rec.SETTINGS)
    c = registry.client()
    planned: list[tuple[str, str, str, str | None]] = []  # env, name, version, alias's current version
    out: dict[str, Any] = {}
    for env in sorted(settings.environments):
        path = rec.record_path(repo, env)
        record = rec.read(path)
        if record is None:
            out[env] = {"action": "no-record"}
            continue
        where = (
            f"{rec.record_path(Path('.'), env).as_posix()}: model {record.name!r} version {record.version}"
        )
        try:
            mv = c.get_model_version(record.name, record.version)
        except Exception as e:
            if registry._is_not_found(e):
                raise PromotionRefused(f"{where}: not found in the registry") from e
            uri = registry.safe_uri(tracking.tracking_uri())
            raise ModelNotReady(f"registry {uri} unavailable ({registry._short(e)})") from e
        tagged = (mv.tags or {}).get("weights_sha256")
        if tagged != record.sha256:
            raise ChecksumMismatch(
                f"{where}: the registry's weights_sha256 {str(tagged)[:12]}… differs from the record's "
                f"sha256 {record.sha256[:12]}…; alias {env!r} not moved"
            )
        try:
            current = str(c.get_model_version_by_alias(record.name, env).version)
        except Exception as e:
            if not registry._is_not_found(e):
                raise ModelNotReady(f"registry unavailable ({registry._short(e)})") from e
            current = None
        planned.append((env, record.name, record.version, current))
    for env, name, version, current in planned:  # every record checked before any alias moves
        if current == version:
            out[env] = {"action": "unchanged", "name": name, "version": version}
            continue
        prom.set_alias(name, env, version)
        out[env] = {"action": "moved", "name": name, "version": version, "previous": current}
        log.info("sync-aliases: alias %s of %s: %s -> %s", env, name, current or "(none)", version)
    return {"envs": out}
