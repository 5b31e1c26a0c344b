"""Images promoted with the model, and main's pipeline finishing a production promotion, against a real
MLflow server and real git repositories (test_promote's fixtures):

- `mlops register --image key=repository@sha256:...` tags the version `image.<key>`;
- `mlops promote` writes those digests into the env's record, the chart deploys them from it, and
  `mlops rollback` restores the previous record's digests;
- `mlops promote --registered <register --json output>` promotes exactly the version the release
  registered, whatever `candidate` names by then;
- `mlops sync-aliases` after a merge-shaped commit of a production record moves the `production` alias to
  the record's version, and refuses (exit 6, no alias moved) a record whose sha256 the registry's
  version does not hold.
"""

from __future__ import annotations

import json
import subprocess
import uuid

import pytest
import yaml
from registry.conftest import BIN, copy_workspace, evaluate_args, perturb_weights, register_args

from mlops import registry
from mlops.gitops import render

from .k8s import pod_spec
from .test_promote import aliases, clone, gated, git, land_record, mlops, pass_gate  # noqa: F401 - fixtures
from conftest import Workspace

pytestmark = pytest.mark.slow
RECORD = "deploy/envs/staging/model.yaml"
PROD = "deploy/envs/production/model.yaml"


def images(tag: str) -> dict[str, str]:
    """Digest references as `docker inspect ... RepoDigests` gives them after a push (one per image)."""
    return {
        key: f"127.0.0.1:5000/team/mlops-{repo}@sha256:{(tag + key).encode().hex()[:64].ljust(64, '0')}"
        for key, repo in (
            ("server", "serve"),
            ("fetch", "fetch"),
            ("monitor", "monitor"),
            ("pipeline", "pipeline"),
        )
    }


def register_json(ws: Workspace, name: str, *extra: str) -> dict:
    """`mlops register --json` as ci-release runs it; returns its output."""
    out = subprocess.run(
        [str(BIN / "mlops"), "--params", str(ws.params), *register_args(ws, name, *extra)],
        capture_output=True,
        text=True,
        cwd=ws.root,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    return json.loads(out.stdout)


def image_args(refs: dict[str, str]) -> list[str]:
    return [arg for key, ref in refs.items() for arg in ("--image", f"{key}={ref}")]


@pytest.fixture(scope="module")
def released(gated: Workspace, mlflow_server: str, tmp_path_factory: pytest.TempPathFactory):  # noqa: F811
    """Two versions of one model, each registered with its release's image digests (v1: images A, v2:
    images B), and a version of another model registered without images (a local `make register`)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("MLFLOW_TRACKING_URI", mlflow_server)
        tag = uuid.uuid4().hex[:8]
        name, plain = f"churn-images-{tag}", f"churn-plain-{tag}"
        a, b = images("a"), images("b")
        first = register_json(gated, name, *image_args(a))
        ws2 = copy_workspace(gated, tmp_path_factory.mktemp("images-v2") / "ws")
        perturb_weights(ws2, 0.01, seed=1)
        assert ws2.mlops(*evaluate_args(ws2)) == 0
        pass_gate(ws2)
        second = register_json(ws2, name, *image_args(b))
        vp = register_json(gated, plain)["version"]
        yield {"name": name, "first": first, "second": second, "a": a, "b": b, "plain": (plain, vp)}


def test_register_tags_the_version_with_its_image_digests(released, capsys):
    name, first = released["name"], released["first"]
    assert first["images"] == dict(sorted(released["a"].items()))
    tags = registry.client().get_model_version(name, first["version"]).tags
    assert {k: v for k, v in tags.items() if k.startswith("image.")} == {
        f"image.{k}": v for k, v in released["a"].items()
    }
    plain, vp = released["plain"]
    assert not [k for k in registry.client().get_model_version(plain, vp).tags if k.startswith("image.")]


def test_register_refuses_an_image_without_a_digest(gated, mlflow_server, monkeypatch, capsys):  # noqa: F811
    from mlops import cli

    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server)
    args = register_args(gated, "churn-never", "--image", "server=ghcr.io/example-org/mlops-serve:0.1.0")
    capsys.readouterr()
    assert cli.main(["--params", str(gated.params), *args]) == 2
    assert "repository@sha256" in capsys.readouterr().err


def test_promote_records_the_digests_the_chart_deploys_them_and_rollback_restores_them(released, clone):  # noqa: F811
    name, v1, v2 = released["name"], released["first"]["version"], released["second"]["version"]
    a, b = released["a"], released["b"]
    assert mlops(clone, "promote", "--env", "staging", "--version", v1, "--name", name) == 0
    assert yaml.safe_load((clone / RECORD).read_text())["images"] == a
    assert "images: " in git(clone, "log", "-1", "--format=%B") and a["server"] in git(
        clone, "log", "-1", "--format=%B"
    )

    def deployed() -> dict[str, str]:
        objects = render.render_env("staging", clone)
        spec = pod_spec(objects)
        drift = [o for o in objects if o["kind"] == "CronJob"]
        return {
            "server": spec["containers"][0]["image"],
            "fetch": spec["initContainers"][0]["image"],
            **(
                {
                    "monitor": drift[0]["spec"]["jobTemplate"]["spec"]["template"]["spec"]["containers"][0][
                        "image"
                    ]
                }
                if drift
                else {}
            ),
        }

    assert deployed() == {k: a[k] for k in deployed()}
    assert mlops(clone, "promote", "--env", "staging", "--version", v2, "--name", name) == 0
    assert yaml.safe_load((clone / RECORD).read_text())["images"] == b
    assert deployed() == {k: b[k] for k in deployed()}

    assert mlops(clone, "rollback", "--env", "staging") == 0
    restored = yaml.safe_load((clone / RECORD).read_text())
    assert (restored["version"], restored["images"]) == (v1, a)
    assert deployed() == {k: a[k] for k in deployed()}


def test_a_version_without_images_is_promoted_with_the_values_images(released, clone):  # noqa: F811
    plain, vp = released["plain"]
    assert mlops(clone, "promote", "--env", "staging", "--version", vp, "--name", plain) == 0
    assert yaml.safe_load((clone / RECORD).read_text())["images"] == {}
    assert "the env's values.yaml images" in git(clone, "log", "-1", "--format=%B")
    values = yaml.safe_load((clone / "deploy/envs/staging/values.yaml").read_text())["image"]
    spec = pod_spec(render.render_env("staging", clone))
    assert spec["containers"][0]["image"] == f"{values['repository']}:{values['tag']}"


def test_promote_registered_promotes_the_released_version_not_candidate(released, clone, tmp_path, capsys):  # noqa: F811
    """The release job's `register --json` output names v1; `candidate` has moved on to v2 since."""
    name, first = released["name"], released["first"]
    assert str(registry.client().get_registered_model(name).aliases["candidate"]) != first["version"]
    registered = tmp_path / "registered.json"
    registered.write_text(json.dumps(first))
    assert mlops(clone, "promote", "--env", "staging", "--registered", str(registered)) == 0
    record = yaml.safe_load((clone / RECORD).read_text())
    assert (record["name"], record["version"], record["images"]) == (name, first["version"], released["a"])
    assert aliases(name)["staging"] == first["version"]
    capsys.readouterr()
    assert mlops(clone, "promote", "--env", "staging", "--registered", str(tmp_path / "none.json")) == 2
    assert "none.json: not found" in capsys.readouterr().err


def test_sync_aliases_moves_production_to_the_merged_record_and_refuses_a_mismatch(released, clone, capsys):  # noqa: F811
    """A merged production merge request is a commit of deploy/envs/production/model.yaml on main (nothing
    promotes there): sync-aliases points `production` at its version; a record whose sha256 the registry
    version does not hold is refused (exit 6) and no alias moves."""
    name, v1, v2 = released["name"], released["first"]["version"], released["second"]["version"]
    land_record(clone, "production", name, v2)  # the merge commit's tree
    before = aliases(name).get("production")
    assert before != v2
    capsys.readouterr()
    assert mlops(clone, "sync-aliases", "--json") == 0
    out = json.loads(capsys.readouterr().out)
    assert out["envs"]["production"] == {"action": "moved", "name": name, "version": v2, "previous": before}
    assert aliases(name)["production"] == v2
    assert mlops(clone, "sync-aliases", "--json") == 0  # again: nothing to move
    assert json.loads(capsys.readouterr().out)["envs"]["production"]["action"] == "unchanged"

    path = clone / PROD
    data = yaml.safe_load(path.read_text())
    v1_sha = registry.client().get_model_version(name, v1).tags["weights_sha256"]
    path.write_text(yaml.safe_dump({**data, "version": v1, "sha256": "0" * 64}, sort_keys=False))
    git(clone, "commit", "-qam", "a record the registry does not hold")
    assert mlops(clone, "sync-aliases") == 6
    err = capsys.readouterr().err
    assert "weights_sha256" in err and "production" in err, err
    assert aliases(name)["production"] == v2  # untouched
    path.write_text(yaml.safe_dump({**data, "version": v1, "sha256": v1_sha}, sort_keys=False))
    git(clone, "commit", "-qam", "rollback-shaped merge")
    assert mlops(clone, "sync-aliases") == 0
    assert aliases(name)["production"] == v1
