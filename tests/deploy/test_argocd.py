"""Argo CD: the AppProject and the ApplicationSet in deploy/argocd/ against their CRD schemas, the
Applications the ApplicationSet's git directory generator produces for deploy/envs/* (computed offline by
mlops.gitops.render with Helm's Go template engine, missingkey=error), and each of them rendered as Argo CD
would (helm template with the env's values.yaml and model.yaml) and validated strictly.
"""

from __future__ import annotations

import fnmatch
from pathlib import Path

import pytest
import yaml

from mlops.errors import ConfigError
from mlops.gitops import render

from .k8s import REPO, load_docs, pod_spec, record, scratch_repo, validate_all, validate_custom, write_record

ARGOCD = REPO / "deploy" / "argocd"
ENVS = sorted(p.name for p in (REPO / "deploy" / "envs").iterdir() if p.is_dir())


def appset() -> dict:
    (doc,) = load_docs(ARGOCD / "applicationset.yaml")
    return doc


def project() -> dict:
    (doc,) = load_docs(ARGOCD / "appproject.yaml")
    return doc


def test_manifests_match_their_crd_schemas():
    for path in sorted(ARGOCD.glob("*.yaml")):
        for doc in load_docs(path):
            validate_custom(doc)
    for app in render.applications(REPO):
        validate_custom(app)


def test_a_schema_violation_is_caught():
    doc = appset()
    doc["spec"]["template"]["spec"]["source"]["helm"]["valueFile"] = "x.yaml"  # typo of valueFiles
    with pytest.raises(AssertionError, match="valueFile"):
        validate_custom(doc)


def test_project_allows_only_this_repo_and_model_namespaces():
    spec = project()["spec"]
    assert set(spec) == {"description", "sourceRepos", "destinations"}  # no cluster-scoped kinds allowed
    source = appset()["spec"]["template"]["spec"]["source"]["repoURL"]
    assert spec["sourceRepos"] == [source]
    assert appset()["spec"]["generators"][0]["git"]["repoURL"] == source
    assert spec["destinations"] == [{"server": "https://kubernetes.default.svc", "namespace": "mlops-*"}]


def test_generator_form():
    spec = appset()["spec"]
    assert spec["goTemplate"] is True and spec["goTemplateOptions"] == ["missingkey=error"]
    assert spec["generators"] == [
        {
            "git": {
                "repoURL": spec["template"]["spec"]["source"]["repoURL"],
                "revision": "main",
                "directories": [{"path": "deploy/envs/*"}],
            }
        }
    ]
    # the branch Argo CD tracks is the one promotions go to
    settings = yaml.safe_load((REPO / "deploy" / "promotion.yaml").read_text())
    assert spec["template"]["spec"]["source"]["targetRevision"] == settings["branch"]


def test_one_application_per_env_folder():
    apps = render.applications(REPO)
    assert [a["metadata"]["name"] for a in apps] == [f"mlops-{env}" for env in ENVS]
    assert {"staging", "production"} <= set(ENVS)
    dest = project()["spec"]["destinations"]
    for env, app in zip(ENVS, apps, strict=True):
        spec = app["spec"]
        assert spec["project"] == project()["metadata"]["name"]
        assert any(
            d["server"] == spec["destination"]["server"]
            and fnmatch.fnmatch(spec["destination"]["namespace"], d["namespace"])
            for d in dest
        )
        assert spec["destination"]["namespace"] == f"mlops-{env}"
        helm = spec["source"]["helm"]
        assert helm["valueFiles"] == [
            f"../../deploy/envs/{env}/values.yaml",
            f"../../deploy/envs/{env}/model.yaml",
        ]
        assert helm["parameters"] == [{"name": "environment", "value": env}]
        for f in helm["valueFiles"]:  # value files stay inside the repository
            resolved = (REPO / spec["source"]["path"] / f).resolve()
            assert resolved.is_relative_to(REPO)
        assert (REPO / "deploy/envs" / env / "values.yaml").is_file()


def test_sync_policy_staging_automatic_production_manual():
    apps = {a["metadata"]["labels"]["mlops/environment"]: a for a in render.applications(REPO)}
    assert apps["staging"]["spec"]["syncPolicy"]["automated"] == {"prune": True, "selfHeal": True}
    assert "automated" not in apps["production"]["spec"]["syncPolicy"]


@pytest.mark.parametrize("env", ENVS)
def test_each_application_renders(env, tmp_path):
    """With a promotion record in every env (the scratch copy gets one where the repo has none), each
    generated Application renders and validates, and the pods run exactly the recorded version."""
    repo = scratch_repo(tmp_path)
    rec_path = repo / "deploy/envs" / env / "model.yaml"
    if not rec_path.exists():
        write_record(repo, env, record(env, "12", "12" * 32))
    rec = yaml.safe_load(rec_path.read_text())
    (app,) = [a for a in render.applications(repo) if a["metadata"]["name"] == f"mlops-{env}"]
    objects = render.render_application(app, repo)
    validate_all(objects)
    assert {o["metadata"]["labels"]["mlops/environment"] for o in objects} == {env}
    spec = pod_spec(objects)
    fetch_args = spec["initContainers"][0]["args"]
    assert fetch_args[fetch_args.index("--version") + 1] == str(rec["version"])
    serve_args = spec["containers"][0]["args"]
    assert serve_args[serve_args.index("--model-version") + 1] == str(rec["version"])
    assert render.render_env(env, repo) == objects


@pytest.mark.parametrize("env", ENVS)
def test_env_in_the_repository(env):
    """As committed: an env with a record renders; one without (nothing promoted yet, e.g. production
    before its first promotion) fails with a message naming the missing record, and renders nothing."""
    if (REPO / "deploy/envs" / env / "model.yaml").exists():
        validate_all(render.render_env(env, REPO))
    else:
        with pytest.raises(ConfigError, match=rf"mlops-{env}: .*deploy/envs/{env}/model\.yaml is missing"):
            render.render_env(env, REPO)


def test_a_new_env_folder_becomes_an_application(tmp_path):
    repo = scratch_repo(tmp_path)
    (repo / "deploy/envs/canary-eu").mkdir()
    (repo / "deploy/envs/canary-eu/values.yaml").write_text("registry:\n  secretName: mlflow-registry\n")
    write_record(repo, "canary-eu", record("canary-eu", "2"))
    (repo / "deploy/envs/.hidden").mkdir()
    apps = {a["metadata"]["name"]: a for a in render.applications(repo)}
    assert "mlops-canary-eu" in apps and "mlops-.hidden" not in apps
    assert "automated" not in apps["mlops-canary-eu"]["spec"]["syncPolicy"]
    validate_all(render.render_application(apps["mlops-canary-eu"], repo))


def test_missing_key_is_an_error(tmp_path):
    repo = scratch_repo(tmp_path)
    path = repo / "deploy/argocd/applicationset.yaml"
    path.write_text(path.read_text().replace("{{.path.basename}}", "{{.path.basenam}}", 1))
    with pytest.raises(ConfigError, match="basenam"):
        render.applications(repo)


def test_value_file_order_record_over_env_values(tmp_path):
    """The record is the last value file: a stray `version` in values.yaml cannot override it."""
    repo = scratch_repo(tmp_path)
    values = repo / "deploy/envs/staging/values.yaml"
    values.write_text(values.read_text() + 'version: "999"\n')
    write_record(repo, "staging", record("staging", "7"))
    args = pod_spec(render.render_env("staging", repo))["containers"][0]["args"]
    assert args[args.index("--model-version") + 1] == "7"


def test_unknown_env_is_an_error():
    with pytest.raises(ConfigError, match="no Application for this folder"):
        render.render_env("nowhere", Path(REPO))


def test_parameters_are_typed_like_helm_set(tmp_path):
    """Application parameters become `--set` values: integers and booleans typed, forceString kept."""
    repo = scratch_repo(tmp_path)
    write_record(repo, "staging", record("staging", "7"))
    (app,) = [a for a in render.applications(repo) if a["metadata"]["name"] == "mlops-staging"]
    app["spec"]["source"]["helm"]["parameters"] += [
        {"name": "service.targetPort", "value": "18080"},
        {"name": "logJson", "value": "false"},
        {"name": "podLabels.team", "value": "042", "forceString": True},
    ]
    spec = pod_spec(render.render_application(app, repo))
    server = spec["containers"][0]
    assert server["ports"][0]["containerPort"] == 18080
    assert "--log-json" not in server["args"]
    typed = [render.typed_value(v) for v in ("1", "01", "-3", "1.5", "null", "true")]
    assert typed == [1, "01", -3, "1.5", None, True]
