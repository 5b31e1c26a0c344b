"""records: the promotion record of any environment, `deploy/envs/<env>/model.yaml`, read-only (only `mlops promote` writes it).

The record names the model version running in an environment: name, version, uri, sha256, images (the
digests of the images CI built with it; empty: the env's values.yaml images), metrics, git_sha,
promoted_at, promoted_by, previous. No file means no model was promoted there yet.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from mlops.errors import ConfigError


class PromotionRecord(BaseModel):
    """`deploy/envs/<env>/model.yaml`: the model version promoted to an environment (written by promote)."""

    model_config = ConfigDict(extra="allow", frozen=True)

    name: str
    version: str
    sha256: str
    uri: str | None = None
    images: dict[str, str] | None = None
    metrics: dict[str, Any] | None = None
    git_sha: str | None = None
    promoted_at: Any = None
    promoted_by: str | None = None
    previous: Any = None


def read_record(path: str | os.PathLike[str]) -> PromotionRecord | None:
    """Read a promotion record; None when the file does not exist (no champion yet).

    Raises:
        ConfigError: the file exists but is not a valid record (names the file and key).
    """
    path = Path(path)
    if not path.is_file():
        return None
    try:
        data = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as e:
        raise ConfigError(f"{path}: unreadable promotion record ({e})".replace("\n", " ")) from e
    if isinstance(data, dict) and data.get("version") is not None:
        data = {**data, "version": str(data["version"])}
    try:
        return PromotionRecord.model_validate(data)
    except ValidationError as e:
        err = e.errors()[0]
        raise ConfigError(f"{path}: {'.'.join(map(str, err['loc'])) or '(top level)'}: {err['msg']}") from e
