"""record: the promotion record `deploy/envs/<env>/model.yaml` and the promotion settings
`deploy/promotion.yaml`.

The record is the one file that says which model version runs in an environment (git is the source of
truth; the MLflow alias `<env>` mirrors it). Only `mlops promote` and `mlops rollback` write it, atomically.
Its fields: name, version, uri, sha256, images ({server, fetch, monitor, pipeline:
repository@sha256:...}: the images CI built and pushed with the version, from its `image.*` registry tags;
the chart deploys them by digest; `{}` for a version registered without them, which runs the images of
the env's values.yaml), metrics, git_sha (the commit that produced the model), promoted_at, promoted_by,
previous ({version, uri, sha256} of the record it replaced, or null).

The settings name the branch Argo CD tracks, the git remote, and per environment whether it is protected:
a protected environment is changed by a merge request, never by a direct commit.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from mlops import files
from mlops.errors import ConfigError
from mlops.records import PromotionRecord, read_record

ENVS_DIR = Path("deploy/envs")
RECORD = "model.yaml"
SETTINGS = Path("deploy/promotion.yaml")
FIELDS = (
    "name",
    "version",
    "uri",
    "sha256",
    "images",
    "metrics",
    "git_sha",
    "promoted_at",
    "promoted_by",
    "previous",
)
HEADER = (
    "# Promotion record: the model version this environment runs (fields: src/mlops/gitops/record.py).\n"
    "# Written only by `mlops promote` / `mlops rollback`; change it through them, not by hand.\n"
)


class EnvSettings(BaseModel):
    """`environments.<env>` of deploy/promotion.yaml."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    protected: bool = Field(description="changed only through a merge request (never a direct commit)")


class DeploySettings(BaseModel):
    """deploy/promotion.yaml: where promotions go."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    branch: str = Field(min_length=1, description="the branch Argo CD tracks (targetRevision)")
    remote: str = Field(min_length=1, description="the git remote pushed to (CI's clone: origin)")
    environments: dict[str, EnvSettings] = Field(min_length=1)

    def env(self, name: str, source: Path) -> EnvSettings:
        """The settings of one environment; ConfigError naming the file when it is not declared."""
        if name not in self.environments:
            known = ", ".join(sorted(self.environments))
            raise ConfigError(f"{source}: environments.{name}: unknown environment (declared: {known})")
        return self.environments[name]


def load_settings(path: str | os.PathLike[str]) -> DeploySettings:
    """Read deploy/promotion.yaml.

    Raises:
        ConfigError: missing, unreadable or invalid (the message names the file and key).
    """
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError as e:
        raise ConfigError(f"{path}: promotion settings not found") from e
    except (OSError, yaml.YAMLError) as e:
        raise ConfigError(f"{path}: unreadable promotion settings ({e})".replace("\n", " ")) from e
    try:
        return DeploySettings.model_validate(data)
    except ValidationError as e:
        err = e.errors()[0]
        where = ".".join(map(str, err["loc"])) or "(top level)"
        raise ConfigError(f"{path}: {where}: {err['msg']}") from e


def record_path(repo: Path, env: str) -> Path:
    """deploy/envs/<env>/model.yaml inside a repository checkout."""
    return repo / ENVS_DIR / env / RECORD


def read(path: Path) -> PromotionRecord | None:
    """The record at `path`, or None when the environment has none yet (ConfigError if invalid)."""
    return read_record(path)


def pointer(record: PromotionRecord | dict[str, Any] | None) -> dict[str, str] | None:
    """{version, uri, sha256} of a record: what a new record keeps as `previous`."""
    if record is None:
        return None
    data = record if isinstance(record, dict) else record.model_dump()
    return {"version": str(data["version"]), "uri": data.get("uri"), "sha256": data["sha256"]}


def dumps(record: dict[str, Any]) -> str:
    """The record as YAML: contract fields in contract order, version as a string, a header comment."""
    missing = [k for k in FIELDS if k not in record]
    if missing:
        raise ValueError(f"promotion record: missing fields {missing}")
    ordered = {k: record[k] for k in FIELDS}
    ordered["version"] = str(ordered["version"])
    return HEADER + yaml.safe_dump(ordered, sort_keys=False, default_flow_style=False, allow_unicode=True)


def write(path: Path, record: dict[str, Any]) -> None:
    """Write a record atomically (temp file + rename: a reader never sees half a record)."""
    files.write_bytes(path, dumps(record).encode())
