"""Helpers of the chart and Argo CD tests: strict Kubernetes validation of rendered objects, custom resources
against CRD JSON schemas, and a scratch copy of the repository's deploy files with promotion records.

Core kinds are validated with kubernetes-validate (--strict: unknown fields fail) for the lowest and the
highest Kubernetes version the chart supports. Custom resources are validated against the CRD JSON schemas
in kubeconform's layout `{group}/{kind}_{version}.json`, looked up in order at:
  1. $MLOPS_CRD_SCHEMAS (a directory or an http(s) URL prefix), else ../shared/schemas next to the repo;
  2. its derived/ folder (schemas generated from upstream CRDs the catalog lacks: Kubeflow Trainer);
  3. the public CRDs catalog that kubeconform users point at,
     https://raw.githubusercontent.com/datreeio/CRDs-catalog/main/ .
A test skips (saying why) only where no location is readable.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "charts" / "model-server"
# the lowest and highest Kubernetes versions the chart supports (Chart.yaml kubeVersion: >=1.29)
KUBE_VERSIONS = ("1.29.0", "1.37.0")
CATALOG_URL = "https://raw.githubusercontent.com/datreeio/CRDs-catalog/main/"
CUSTOM_GROUPS = ("argoproj.io", "monitoring.coreos.com", "trainer.kubeflow.org")


def schema_locations() -> list[str]:
    """Where CRD schemas are looked up, in order."""
    local = os.environ.get("MLOPS_CRD_SCHEMAS") or str(REPO.parent / "shared" / "schemas")
    return [local, local.rstrip("/") + "/derived", CATALOG_URL]


@functools.cache
def crd_schema(group: str, kind: str, version: str) -> dict[str, Any]:
    """The JSON schema of a custom resource kind; pytest.skip when no location has it."""
    rel = f"{group}/{kind.lower()}_{version}.json"
    tried = []
    for location in schema_locations():
        if location.startswith(("http://", "https://")):
            url = location.rstrip("/") + "/" + rel
            try:
                with urllib.request.urlopen(url, timeout=10) as response:  # noqa: S310 - fixed https prefix
                    return json.load(response)
            except (urllib.error.URLError, OSError, ValueError) as e:
                tried.append(f"{url} ({e})")
        else:
            path = Path(location) / rel
            if path.is_file():
                return json.loads(path.read_text())
            tried.append(f"{path} (not found)")
    pytest.skip(f"no CRD schema for {group}/{kind} {version} readable; tried: {'; '.join(tried)}")


def is_custom(obj: dict[str, Any]) -> bool:
    return obj["apiVersion"].split("/")[0] in CUSTOM_GROUPS


def validate_custom(obj: dict[str, Any]) -> None:
    """Validate a custom resource against its CRD schema (AssertionError listing every violation)."""
    group, version = obj["apiVersion"].split("/")
    schema = crd_schema(group, obj["kind"], version)
    errors = sorted(
        jsonschema.Draft7Validator(schema).iter_errors(obj), key=lambda e: list(map(str, e.absolute_path))
    )
    where = f"{obj['kind']}/{obj['metadata']['name']}"
    assert not errors, (
        where + ": " + "; ".join(f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in errors)
    )


def validate_core(obj: dict[str, Any], kube_version: str) -> None:
    """Validate a core kind with kubernetes-validate --strict for one Kubernetes version."""
    try:
        kubernetes_validate.validate(obj, kube_version, strict=True)
    except kubernetes_validate.ValidationError as e:
        path = ".".join(map(str, e.path))
        raise AssertionError(
            f"{obj['kind']}/{obj['metadata']['name']} (Kubernetes {kube_version}): {path}: {e.message}"
        ) from None
    except kubernetes_validate.SchemaNotFoundError as e:
        raise AssertionError(
            f"{obj['kind']} {obj['apiVersion']}: no schema in Kubernetes {kube_version}: {e}"
        ) from None


def validate_all(objects: list[dict[str, Any]]) -> None:
    """Every object: core kinds for each supported Kubernetes version, custom resources by CRD schema."""
    assert objects, "nothing rendered"
    for obj in objects:
        if is_custom(obj):
            validate_custom(obj)
        else:
            for version in KUBE_VERSIONS:
                validate_core(obj, version)


def workloads(objects: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] in ("Deployment", "Rollout")]


def pod_spec(objects: list[dict[str, Any]]) -> dict[str, Any]:
    (workload,) = workloads(objects)
    return workload["spec"]["template"]["spec"]


def by_kind(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind]


def record(env: str, version: str = "3", sha256: str | None = None, **extra: Any) -> dict[str, Any]:
    """A promotion record in the contract's fields (DESIGN.md), as `mlops promote` writes it."""
    return {
        "name": "churn-mlp",
        "version": version,
        "uri": f"models:/churn-mlp/{version}",
        "sha256": sha256 or f"{int(version):064x}",
        "images": {},
        "metrics": {"roc_auc": 0.84, "accuracy": 0.8},
        "git_sha": "0123456789abcdef0123456789abcdef01234567",  # pragma: allowlist secret
        "promoted_at": "2026-12-01T12:00:00Z",
        "promoted_by": "ci",
        "previous": None,
        **extra,
    }


def write_record(repo: Path, env: str, rec: dict[str, Any]) -> Path:
    """Write deploy/envs/<env>/model.yaml in a scratch repository (the format of mlops.gitops.record)."""
    from mlops.gitops import record as record_mod

    path = repo / "deploy" / "envs" / env / "model.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(record_mod.dumps(rec))
    return path


def scratch_repo(tmp_path: Path) -> Path:
    """A copy of what Argo CD reads from the repository: charts/ and deploy/."""
    root = tmp_path / "repo"
    for part in ("charts", "deploy"):
        shutil.copytree(REPO / part, root / part)
    return root


def load_docs(path: Path) -> list[dict[str, Any]]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d]
