"""The CI variables contract (src/mlops/ci_variables/): each CI file passes every variable its jobs' make
targets read, each target checks the ones it needs first (exit 2 naming each missing one, under CI=true
only), nothing reads a variable the contract does not list, and the reference page is generated from it.

Passed means, per system: GitHub, in the job's or the workflow's `env:` with the contract's expression
(`secrets.X`, `vars.X`, ...); GitLab, in the job's or the global `variables:`, or a project CI/CD
variable (GitLab passes those to every job; the file's header names each one the jobs expect), or a
pipeline variable; Jenkins, a credential bound in the stage's steps, an `environment` block, or the
global configuration (named in the Jenkinsfile's header). What the CI system sets itself (CI_*,
GITHUB_*), or the CI image, counts as passed on that system.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from test_ci_files import MAKE_CALL, WORKFLOWS, block, github_triggers, jenkins_leaves, jenkins_runs_on

from mlops import ci_variables as contract
from mlops.ci_variables import BY_NAME, TARGETS, VARIABLES, Need
from mlops.ci_variables.check import missing
from mlops.ci_variables.docs import markdown

from conftest import REPO, copy_repository

EMPTY_TREE = "4b825dc642cb6eb9a060e54bf8d69288fbee4904"  # pragma: allowlist secret
VENV = Path(sys.executable).parent.parent
# set by the CI files for the tools themselves, not read by a make target's own code
TOOL_SETTINGS = {"DVC_NO_ANALYTICS", "GIT_DEPTH"}


def passes(var: contract.Variable, system: str, target: str, found: bool, where: str) -> None:
    """Assert that `system` passes `var` to a job of `target` (`found`: the file does, as the contract says)."""
    how = var.supply(system)
    if how is None:
        assert var.needs[target] is not Need.REQUIRED, (
            f"{var.name}: required by {target}, not passed on {system}"
        )
        return
    assert found, (
        f"{where}: does not pass {var.name} ({contract.describe_supply(system, how)}), which {target} reads"
    )


# ------------------------------------------------------------------ GitHub Actions
def github_jobs():
    """(workflow, job name, job, target, triggers) of every job."""
    for path in sorted(WORKFLOWS.glob("*.yml")):
        doc = yaml.safe_load(path.read_text())
        for name, job in doc["jobs"].items():
            (run,) = [s["run"].strip() for s in job["steps"] if "run" in s]
            yield doc, path.name, name, job, MAKE_CALL.match(run).group(1)


def test_github_jobs_get_every_variable_their_target_reads():
    for doc, workflow, name, job, target in github_jobs():
        env = {**doc.get("env", {}), **job.get("env", {})}
        triggers = github_triggers(doc)
        for var in VARIABLES:
            if target not in var.needs or not triggers & set(var.pipelines):
                continue
            how = var.github
            if how == contract.SYSTEM:
                found = True
            elif how == contract.IMAGE:
                found = "mlops-ci:" in job.get("container", {}).get("image", "")
            else:
                found = how is not None and how in str(env.get(var.name, ""))
            passes(var, "github", target, found, f"{workflow}:{name}")


# ------------------------------------------------------------------ GitLab CI
def gitlab_doc() -> dict:
    return yaml.safe_load((REPO / ".gitlab-ci.yml").read_text())


def gitlab_jobs():
    doc = gitlab_doc()
    for name, job in doc.items():
        if isinstance(job, dict) and "script" in job:
            yield doc, name, job, MAKE_CALL.match(job["script"][0]).group(1)


def test_gitlab_jobs_get_every_variable_their_target_reads():
    for doc, name, job, target in gitlab_jobs():
        variables = {**doc.get("variables", {}), **job.get("variables", {})}
        for var in VARIABLES:
            if target not in var.needs:
                continue
            how = var.gitlab
            if how in (contract.SYSTEM, contract.PROJECT, contract.PIPELINE):
                found = True
            elif how == contract.IMAGE:
                found = "image" not in job and "shell-docker" not in job.get("tags", [])
            else:
                found = how is not None and how in str(variables.get(var.name, ""))
            passes(var, "gitlab", target, found, f".gitlab-ci.yml:{name}")


def test_gitlab_header_names_every_project_variable():
    """Project CI/CD variables reach every job without a line in the file: its header says which to set."""
    text = (REPO / ".gitlab-ci.yml").read_text()
    header = text[: text.index("\nworkflow:")]
    for var in VARIABLES:
        if var.gitlab == contract.PROJECT:
            assert re.search(rf"\b{var.name}\b", header), (
                f".gitlab-ci.yml header: name the project variable {var.name}"
            )


# ------------------------------------------------------------------ Jenkins
def jenkins_text() -> str:
    return (REPO / "Jenkinsfile").read_text()


def jenkins_bindings(steps: str) -> set[tuple[str, str]]:
    """(credentials id, variable) of every credential binding in a stage's steps."""
    found = set()
    for call in re.findall(r"(?:string|usernamePassword)\(([^()]*)\)", steps):
        cred = re.search(r"credentialsId:\s*'([^']+)'", call)
        for variable in re.findall(r"(?:variable|usernameVariable|passwordVariable):\s*'([^']+)'", call):
            found.add((cred.group(1), variable))
    return found


def test_jenkins_stages_get_every_variable_their_target_reads():
    text = jenkins_text()
    top_env = block(text, re.search(r"^\s{4}environment\s*\{", text, re.M).start())
    for name, stage in jenkins_leaves().items():
        (call,) = re.findall(r"sh\s+'([^']+)'", stage["steps"])
        target = MAKE_CALL.match(call).group(1)
        bound = jenkins_bindings(stage["steps"])
        environment = top_env + "\n" + stage["environment"]
        for var in VARIABLES:
            if target not in var.needs or not any(jenkins_runs_on(stage["when"], p) for p in var.pipelines):
                continue
            how = var.jenkins
            if how in (contract.SYSTEM, contract.CONFIG, contract.IMAGE):
                found = True  # the CI image: test_ci_files checks where each stage runs
            elif how == contract.ENVIRONMENT:
                found = bool(re.search(rf"^\s*{var.name}\s*=", environment, re.M))
            else:
                found = how is not None and (how.removeprefix(contract.CREDENTIAL), var.name) in bound
            passes(var, "jenkins", target, found, f"Jenkinsfile stage {name}")


def test_jenkinsfile_header_names_every_credential_and_setting():
    text = jenkins_text()
    header = text[: text.index("def withOptionalCredentials")]
    for var in VARIABLES:
        how = var.jenkins or ""
        if how == contract.CONFIG:
            assert re.search(rf"\b{var.name}\b", header), f"Jenkinsfile header: name the setting {var.name}"
        if how.startswith(contract.CREDENTIAL):
            assert how.removeprefix(contract.CREDENTIAL) in header, (
                f"Jenkinsfile header: name the credential of {var.name}"
            )
    # CI=true as on the other systems: the make targets check their variables there too
    assert re.search(
        r"^\s*CI = 'true'", block(text, re.search(r"^\s{4}environment\s*\{", text, re.M).start()), re.M
    )


# ------------------------------------------------------------------ nothing outside the contract
def test_ci_files_pass_only_variables_of_the_contract():
    """A variable a job sets that its target does not read is a stale line, or a contract entry missing."""
    for _, workflow, name, job, target in github_jobs():
        for key in job.get("env", {}):
            known = key in BY_NAME and target in BY_NAME[key].needs
            assert known or key in TOOL_SETTINGS, (
                f"{workflow}:{name} sets {key}, which {target} does not read"
            )

    for _, name, job, target in gitlab_jobs():
        for key in job.get("variables", {}):
            assert key in BY_NAME and target in BY_NAME[key].needs, f".gitlab-ci.yml:{name} sets {key}"
    for name, stage in jenkins_leaves().items():
        (call,) = re.findall(r"sh\s+'([^']+)'", stage["steps"])
        target = MAKE_CALL.match(call).group(1)
        names = {v for _, v in jenkins_bindings(stage["steps"])}
        names |= set(re.findall(r"^\s*([A-Z][A-Z0-9_]*)\s*=", stage["environment"], re.M))
        for key in names:
            assert key in BY_NAME and target in BY_NAME[key].needs, f"Jenkinsfile stage {name} sets {key}"


def test_the_makefile_ci_recipes_read_only_contract_variables():
    makefile = (REPO / "Makefile").read_text()
    section = makefile[makefile.index("# CI jobs:") :]
    read = set(re.findall(r"\$\$\{?([A-Z][A-Z0-9_]*)", section))
    assert {"DVC_REMOTE_URL", "IMAGE_REGISTRY", "MLOPS_DIFF_BASE", "CI"} <= read
    assert read <= set(BY_NAME), f"read by the CI recipes, not in the contract: {sorted(read - set(BY_NAME))}"


# Read by code the ci-* targets do not run (the server, the orchestrators), or set by the CI systems, git
NOT_CI_JOB_SETTINGS = {
    "MLOPS_MODEL_VERSION",
    "PROMETHEUS_MULTIPROC_DIR",
    "OMP_NUM_THREADS",
    "MKL_NUM_THREADS",
    "MLOPS_KFP_PYTHON",
}
SYSTEM_PREFIXES = ("CI_", "GITHUB_", "GITLAB_", "BUILD_", "JOB_", "JENKINS_", "GIT_")


def test_every_variable_the_package_reads_by_name_is_in_the_contract():
    """A new `os.environ.get("X")` in src/mlops is either in the contract (what CI must pass), set by a
    CI system, or listed above as read outside the CI jobs: adding one makes someone decide which."""
    read = set()
    for path in (REPO / "src/mlops").rglob("*.py"):
        read |= set(re.findall(r"(?:environ|env)(?:\.get\(|\[)\s*\"([A-Z][A-Z0-9_]+)\"", path.read_text()))
    assert len(read) > 10
    unknown = {n for n in read - set(BY_NAME) - NOT_CI_JOB_SETTINGS if not n.startswith(SYSTEM_PREFIXES)}
    assert not unknown, f"add to src/mlops/ci_variables (or NOT_CI_JOB_SETTINGS): {sorted(unknown)}"


# ------------------------------------------------------------------ the contract itself
def test_the_contract_is_consistent():
    makefile = (REPO / "Makefile").read_text()
    jobs = re.search(r"^CI_JOBS := (.+)$", makefile, re.M).group(1).split()
    assert tuple(jobs) == TARGETS
    for target in TARGETS:  # the check is each job's first prerequisite
        prereqs = re.search(rf"^{target}:([^#\n]*)", makefile, re.M).group(1).split()
        assert prereqs[0] == f"{target}-vars", f"Makefile {target}: check its variables first"
    for var in VARIABLES:
        assert set(var.needs) <= set(TARGETS), var.name
        assert not var.pair or BY_NAME[var.pair].pair == var.name, var.name
        if Need.REQUIRED in var.needs.values():
            assert all(var.supply(s) for s in contract.SYSTEMS), (
                f"{var.name}: required, so every CI passes it"
            )
    from mlops.gitops import record
    from mlops.params_io import read_yaml

    assert record.ENVS_DIR / "production" / record.RECORD == contract.PRODUCTION_RECORD
    assert read_yaml(REPO / "params.yaml")["ingest"]["sql"]["url_env"] == "MLOPS_SQL_URL"


def test_the_reference_page_is_generated_from_the_contract():
    page = REPO / contract.DOC
    assert page.is_file() and page.read_text() == markdown(), "stale: run `make ci-variables`"
    for var in VARIABLES:
        assert f"`{var.name}`" in page.read_text()


# ------------------------------------------------------------------ the check
def ci_env(**more: str) -> dict[str, str]:
    return {"CI": "true", "GITLAB_CI": "true", **more}


@pytest.mark.parametrize(
    ("target", "env", "expected"),
    [
        ("ci-release", ci_env(), {"IMAGE_REGISTRY", "DVC_REMOTE_URL", "MLFLOW_TRACKING_URI"}),
        ("ci-release", ci_env(IMAGE_REGISTRY="r", DVC_REMOTE_URL="d", MLFLOW_TRACKING_URI="m"), set()),
        ("ci-image-publish", ci_env(), {"IMAGE_REGISTRY"}),
        ("ci-train", ci_env(), set()),  # a fork's merge request: no secrets, the embedded defaults
        ("ci-verify", ci_env(), set()),
        ("ci-promote", ci_env(), {"MLFLOW_TRACKING_URI", "GITLAB_TOKEN", "CI_PROJECT_ID"}),
        (
            "ci-promote",
            {"CI": "true", "GITHUB_ACTIONS": "true"},
            {"MLFLOW_TRACKING_URI", "GITHUB_TOKEN", "GITHUB_REPOSITORY"},
        ),
        ("ci-promote", {"CI": "true", "JENKINS_URL": "j", "MLFLOW_TRACKING_URI": "m"}, {"MLOPS_FORGE"}),
        ("ci-retrain", ci_env(CI_PROJECT_ID="1"), {"DVC_REMOTE_URL", "GITLAB_TOKEN"}),
    ],
)
def test_each_target_needs_what_the_contract_says(target, env, expected):
    named = {problem.split(" ", 1)[0] for problem in missing(target, env, REPO)}
    assert named == expected


def test_conditions_sql_source_production_record_and_pairs(tmp_path):
    repo = tmp_path
    params = (REPO / "params.yaml").read_text()
    (repo / "params.yaml").write_text(params.replace("  source: demo ", "  source: sql  ", 1))
    assert [p.split(" ")[0] for p in missing("ci-train", ci_env(), repo)] == ["MLOPS_SQL_URL"]
    assert not missing("ci-train", ci_env(MLOPS_SQL_URL="postgresql://x"), repo)
    assert not missing("ci-report", ci_env(), repo)
    (repo / contract.PRODUCTION_RECORD).parent.mkdir(parents=True)
    (repo / contract.PRODUCTION_RECORD).write_text("name: m\n")
    assert {p.split(" ")[0] for p in missing("ci-report", ci_env(), repo)} == {
        "DVC_REMOTE_URL",
        "MLFLOW_TRACKING_URI",
    }
    half = missing(
        "ci-release",
        ci_env(IMAGE_REGISTRY="r", DVC_REMOTE_URL="d", MLFLOW_TRACKING_URI="m", REGISTRY_USER="u"),
        repo,
    )
    assert half == ["REGISTRY_PASSWORD is not set, but REGISTRY_USER is: set both or neither"]


def check_cmd(target: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """The check as the Makefile runs it: the runner's python3, the checkout's src/ (nothing installed)."""
    return subprocess.run(
        ["python3", "-B", "-m", "mlops.ci_variables", "check", target],
        cwd=REPO,
        env={"PATH": os.environ["PATH"], "PYTHONPATH": str(REPO / "src"), **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_the_check_is_a_no_op_outside_ci():
    proc = check_cmd("ci-release", {})
    assert proc.returncode == 0 and not proc.stderr


def test_a_ci_target_exits_2_naming_each_missing_variable_before_any_work(tmp_path):
    """`make ci-release` under CI=true with a minimal environment: exit 2, one line per missing variable
    (where this CI supplies it), and nothing run: no install, no dvc, no register, no file written."""
    repo = copy_repository(tmp_path / "repo")
    before = {p.relative_to(repo) for p in repo.rglob("*")}
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path),
        "CI": "true",
        "GITLAB_CI": "true",
        "VENV": str(VENV),
        "MLOPS_DIFF_BASE": EMPTY_TREE,  # the whole repository changed: never "deploy/envs only"
        "REGISTRY_USER": "gitlab-ci-token",
    }
    proc = subprocess.run(
        ["make", "--no-print-directory", "ci-release"],
        cwd=repo,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stdout + proc.stderr
    errors = [line for line in proc.stderr.splitlines() if line.startswith("ci-release: error: ")]
    assert [e.split()[2] for e in errors] == [
        "IMAGE_REGISTRY",
        "REGISTRY_PASSWORD",
        "DVC_REMOTE_URL",
        "MLFLOW_TRACKING_URI",
    ]
    assert "GitLab CI: project CI/CD variable" in proc.stderr and "$CI_REGISTRY_IMAGE" in proc.stderr
    assert "docs/reference/ci-variables.md" in proc.stderr
    assert not re.search(r"pip install|dvc |mlops register", proc.stdout), proc.stdout
    assert {p.relative_to(repo) for p in repo.rglob("*")} == before, "nothing may be written"
    # the check alone, as each target runs it first: the runner's python3, nothing installed
    proc = check_cmd("ci-image-publish", {"CI": "true", "GITHUB_ACTIONS": "true"})
    assert proc.returncode == 2 and "IMAGE_REGISTRY is not set" in proc.stderr
    assert "GitHub Actions: `${{ vars.IMAGE_REGISTRY }}`" in proc.stderr


def test_ci_release_without_a_docker_engine_fails_before_registering(tmp_path):
    """Every variable present, no engine (DOCKER_HOST answers nothing): under CI the release stops with
    exit 2 saying why, before `mlops register`; it used to register and report success."""
    repo = copy_repository(tmp_path / "repo")
    env = {
        "PATH": os.environ["PATH"],
        "HOME": str(tmp_path),
        "CI": "true",
        "VENV": str(VENV),
        "MLOPS_DIFF_BASE": EMPTY_TREE,
        "IMAGE_REGISTRY": "127.0.0.1:5999/team",
        "DVC_REMOTE_URL": str(tmp_path / "remote"),
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
        "DOCKER_HOST": f"unix://{tmp_path / 'no-docker.sock'}",
    }
    proc = subprocess.run(
        ["make", "--no-print-directory", "ci-release"],
        cwd=repo,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert "ci-release: error: no Docker engine at DOCKER_HOST=unix://" in proc.stderr
    assert "mlops register" not in proc.stdout and not (tmp_path / "mlflow.db").exists()


def test_the_check_imports_nothing_heavy():
    """It runs before every CI job: the standard library (and the forge detection) only; params.yaml's
    parser only for the targets that ingest."""
    code = (
        "import sys\n"
        "from mlops.ci_variables.check import check\n"
        "check('ci-promote', {'CI': 'true', 'GITHUB_ACTIONS': 'true'})\n"
        "heavy = {'pydantic', 'yaml', 'ruamel', 'numpy', 'pandas', 'torch', 'mlflow', 'dvc'}\n"
        "print(sorted(heavy & {m.split('.')[0] for m in sys.modules}))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, cwd=REPO)
    assert proc.stdout.strip() == "[]", proc.stdout + proc.stderr
