"""Deploy rehearsal (`make rehearse ENV=staging`), executed for real: train -> gate -> register in a real
MLflow server -> `mlops promote --env <env>` on a temporary clone -> render the env's Argo CD Application
(mlops.gitops.render) -> run its init container (fetch-model) and then its server container under a private
dockerd exactly as rendered (mlops.gitops.rehearse) -> readiness path, an inference request built from the
model's feature spec, the served version = the env's record. Then `mlops rollback --env <env>` and the
rehearsal again: the previous version serves. Promotions of a failed-gate or a tampered version are refused
(exit 6) and change nothing.

Images are built offline like tests/serve/test_docker.py (debootstrap base, host-built wheelhouse) and
tagged under the references the chart renders. A protected env (ENV=production) goes through its merge
request (the forge API is the labelled test double of tests/deploy/mr_double.py), merged in the bare
origin as a reviewer would, then rehearsed.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import uuid
from pathlib import Path

import pytest
import yaml
from deploy.mr_double import running
from deploy.test_promote import pass_gate, tamper_artifact
from registry.conftest import (
    BIN,
    copy_workspace,
    evaluate_args,
    gate_args,
    perturb_weights,
    register_args,
    set_gate,
)
from serve.test_docker import _wheelhouse, build_image, docker, image  # noqa: F401 - fixtures

from mlops import registry
from mlops.gitops import record as rec
from mlops.gitops import render

from conftest import REPO, Workspace, copy_repository, free_port

pytestmark = [pytest.mark.slow, pytest.mark.e2e]
ENV = os.environ.get("MLOPS_REHEARSE_ENV", "staging")
FETCH_REQUIREMENTS = re.search(
    r'ARG FETCH_REQUIREMENTS="([^"]+)"', (REPO / "Dockerfile.fetch").read_text()
).group(1)


@pytest.fixture(scope="module")
def fetch_image(docker, tmp_path_factory) -> str:  # noqa: F811
    """The init container's image (Dockerfile.fetch), built offline."""
    ctx = tmp_path_factory.mktemp("fetch-context")
    return build_image(docker, ctx, "Dockerfile.fetch", "mlops-fetch:test", _wheelhouse(FETCH_REQUIREMENTS))


def sh(cmd: list[str], cwd: Path, env: dict[str, str], expect: int = 0) -> str:
    out = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=900)
    assert out.returncode == expect, (
        f"{' '.join(cmd)} -> {out.returncode}\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    )
    return out.stdout


def register(ws: Workspace, name: str, env: dict[str, str], *extra: str) -> str:
    out = sh([str(BIN / "mlops"), "--params", str(ws.params), *register_args(ws, name, *extra)], ws.root, env)
    return json.loads(out)["version"]


class Clone:
    """The temporary clone CI would promote from, with a bare origin and (protected envs) a forge double."""

    def __init__(self, root: Path, env: dict[str, str], name: str):
        self.repo = copy_repository(root / "repo")
        self.origin = root / "origin.git"
        subprocess.run(["git", "init", "-q", "--bare", "-b", "main", str(self.origin)], check=True)
        self.git("remote", "add", "origin", str(self.origin))
        self.git("push", "-q", "origin", "main")
        self.env, self.name = env, name

    def git(self, *args: str, cwd: Path | None = None) -> str:
        return subprocess.run(
            ["git", *args], cwd=cwd or self.repo, capture_output=True, text=True, check=True
        ).stdout

    def mlops(self, *args: str, expect: int = 0) -> str:
        return sh([str(BIN / "mlops"), *args], self.repo, self.env, expect)

    def record(self) -> dict:
        return yaml.safe_load(rec.record_path(self.repo, ENV).read_text())

    def land(self, *args: str) -> dict:
        """Run promote/rollback; a merge request (protected env) is merged into main as a reviewer would,
        then the same promotion reruns on main (a no-op on git) so the alias mirrors it, as CI does."""
        result = json.loads(self.mlops(*args, "--json"))
        if result["action"] == "merge-request":
            self.git("fetch", "-q", "origin", result["branch"])
            self.git("merge", "-q", "--ff-only", "FETCH_HEAD")
            self.git("push", "-q", "origin", "main")
            again = self.mlops(
                "promote", "--env", ENV, "--version", result["version"], "--name", self.name, "--json"
            )
            assert json.loads(again)["action"] == "unchanged"
        return result


def rehearse(clone: Clone, docker_env: dict[str, str], images: dict[str, str], registry_url: str) -> dict:
    """`mlops rehearse` of the clone's env: the rendered images mapped to the locally built ones."""
    app = next(a for p, a in render.generate(clone.repo) if p["path"]["basename"] == ENV)
    pod = next(
        m for m in render.render_application(app, clone.repo) if m["kind"] in ("Deployment", "Rollout")
    )
    spec = pod["spec"]["template"]["spec"]
    mapping = [f"{c['image']}={images['fetch']}" for c in spec.get("initContainers") or []]
    mapping += [f"{spec['containers'][0]['image']}={images['serve']}"]
    secret = spec["initContainers"][0]["envFrom"][0]["secretRef"]["name"]
    out = sh(
        [
            str(BIN / "mlops"),
            "rehearse",
            "--env",
            ENV,
            "--repo",
            str(clone.repo),
            *[a for m in mapping for a in ("--image", m)],
            "--secret",
            f"{secret}/MLFLOW_TRACKING_URI={registry_url}",
            # a free port instead of the chart's 8080 (tests run side by side on this machine)
            "--set",
            f"service.targetPort={free_port()}",
            "--json",
        ],
        clone.repo,
        {**clone.env, **docker_env},
    )
    return json.loads(out)


@pytest.mark.timeout(2400)  # a cold machine builds two images (cached by content afterwards)
def test_rehearse_promote_serve_rollback_serve(
    pipeline: Workspace,
    mlflow_server: str,
    docker,  # noqa: F811
    image,  # noqa: F811
    fetch_image: str,
    tmp_path: Path,
    tmp_path_factory: pytest.TempPathFactory,
    monkeypatch: pytest.MonkeyPatch,
):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    env = {**os.environ}
    name = f"churn-rehearse-{uuid.uuid4().hex[:8]}"
    # train (the session pipeline) -> gate -> register; a second, retrained-like version
    gated = pass_gate(copy_workspace(pipeline, tmp_path / "ws1"))
    v1 = register(gated, name, env)
    ws2 = copy_workspace(gated, tmp_path / "ws2")
    perturb_weights(ws2, 0.01, seed=2)
    assert ws2.mlops(*evaluate_args(ws2)) == 0
    pass_gate(ws2)
    v2 = register(ws2, name, env)
    assert v1 != v2

    with running("rehearsal-t0ken", tmp_path / "origin.git") as forge:
        env.update(
            MLOPS_FORGE="github",
            GITHUB_REPOSITORY="acme/churn",
            GITHUB_TOKEN="rehearsal-t0ken",
            GITHUB_API_URL=forge.url + "/github",
        )
        clone = Clone(tmp_path, env, name)
        images = {"serve": image, "fetch": fetch_image}

        clone.land("promote", "--env", ENV, "--version", v1, "--name", name)
        clone.land("promote", "--env", ENV, "--version", v2, "--name", name)
        record = clone.record()
        assert record["version"] == v2 and record["previous"]["version"] == v1
        first = rehearse(clone, docker, images, mlflow_server)
        assert first["served"]["version"] == v2 == first["record"]["version"]
        assert first["registry"]["sha256"] == record["sha256"] and first["registry"]["version"] == v2
        assert first["init"] == ["fetch-model"] and first["rows"] >= 2
        assert str(registry.client().get_registered_model(name).aliases[ENV]) == v2

        clone.land("rollback", "--env", ENV)
        assert clone.record()["version"] == v1
        second = rehearse(clone, docker, images, mlflow_server)
        assert second["served"]["version"] == v1 == second["record"]["version"]
        assert second["registry"]["sha256"] == clone.record()["sha256"] != record["sha256"]
        assert str(registry.client().get_registered_model(name).aliases[ENV]) == v1

        # refused: a version whose gate failed, and a version whose stored weights were altered
        ws3 = copy_workspace(gated, tmp_path / "ws3")
        set_gate(ws3, **{"metrics.min": {"roc_auc": 0.999}})
        assert ws3.mlops(*gate_args(ws3)) == 4
        failed = f"{name}-failed"
        vf = register(ws3, failed, env, "--allow-failed")
        tampered = f"{name}-tampered"
        vt = register(gated, tampered, env)
        tamper_artifact(tmp_path_factory.getbasetemp(), tampered, vt)
        head, before = clone.git("rev-parse", "HEAD"), rec.record_path(clone.repo, ENV).read_bytes()
        remote = clone.git("ls-remote", str(clone.origin))
        for model, version in ((failed, vf), (tampered, vt)):
            clone.mlops("promote", "--env", ENV, "--version", version, "--name", model, expect=6)
            assert clone.git("rev-parse", "HEAD") == head
            assert rec.record_path(clone.repo, ENV).read_bytes() == before
            assert clone.git("status", "--porcelain") == ""
            assert clone.git("ls-remote", str(clone.origin)) == remote
        assert str(registry.client().get_registered_model(name).aliases[ENV]) == v1
