"""The three CI definitions: valid for their platform, thin (one make call per job body), and equivalent
(the same make targets for each trigger: merge request, main, schedule, and a retrain request: GitHub
workflow_dispatch, a GitLab pipeline trigger with MLOPS_RETRAIN_REASON, a Jenkins build with the
RETRAIN_REASON parameter)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from _pytest.mark.expression import Expression

from conftest import REPO, copy_repository, tool

TRIGGERS = ("merge_request", "main", "schedule", "retrain_request")
MAKE_CALL = re.compile(r"^make (ci-[a-z0-9-]+)$")
WORKFLOWS = REPO / ".github/workflows"


# ------------------------------------------------------------------ GitHub Actions
def github_triggers(doc: dict) -> set[str]:
    on = doc.get("on", doc.get(True))  # PyYAML reads the key `on` as boolean True
    found = set()
    if "pull_request" in on:
        found.add("merge_request")
    if "push" in on and "main" in on["push"].get("branches", []):
        found.add("main")
    if "schedule" in on:
        found.add("schedule")
    if "workflow_dispatch" in on:
        found.add("retrain_request")
    return found


def github_targets() -> dict[str, set[str]]:
    by_trigger: dict[str, set[str]] = {t: set() for t in TRIGGERS}
    for path in sorted(WORKFLOWS.glob("*.yml")):
        doc = yaml.safe_load(path.read_text())
        for name, job in doc["jobs"].items():
            runs = [s["run"].strip() for s in job["steps"] if "run" in s]
            assert len(runs) == 1 and MAKE_CALL.match(runs[0]), (
                f"{path.name}:{name}: body must be one make ci-* call"
            )
            for trigger in github_triggers(doc):
                by_trigger[trigger].add(MAKE_CALL.match(runs[0]).group(1))
    return by_trigger


# ------------------------------------------------------------------ GitLab CI
GITLAB_SHAPES = {
    "merge_request": [
        "--variable",
        "CI_PIPELINE_SOURCE=merge_request_event",
        "--unset-variable",
        "CI_COMMIT_BRANCH",
    ],
    "main": ["--variable", "CI_PIPELINE_SOURCE=push", "--variable", "CI_COMMIT_BRANCH=main"],
    "schedule": ["--variable", "CI_PIPELINE_SOURCE=schedule", "--variable", "CI_COMMIT_BRANCH=main"],
    "retrain_request": [
        "--variable",
        "CI_PIPELINE_SOURCE=trigger",
        "--variable",
        "CI_COMMIT_BRANCH=main",
        "--variable",
        "MLOPS_RETRAIN_REASON=drift",
    ],
}


def gitlab_jobs(trigger: str, cwd) -> list[str]:
    """Jobs gitlab-ci-local would run for a pipeline of this shape (it evaluates workflow and job rules)."""
    # GCL_* variables are gitlab-ci-local options: drop an outer run's (this test inside a local pipeline job)
    env = {k: v for k, v in os.environ.items() if not k.startswith("GCL_")}
    env["GCL_IGNORE_PREDEFINED_VARS"] = "CI_PIPELINE_SOURCE,CI_COMMIT_BRANCH"
    proc = subprocess.run(
        # the schema is checked once, by check-jsonschema (test_actionlint_and_schemas_accept_the_workflows):
        # gitlab-ci-local's own validation would repeat it per shape (~2 s each)
        [tool("gitlab-ci-local"), "--list-csv", "--no-json-schema-validation", *GITLAB_SHAPES[trigger]],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    header = next(i for i, line in enumerate(lines) if line.startswith("name;stage;"))
    return [line.split(";")[0] for line in lines[header + 1 :] if ";" in line]


def gitlab_targets(tmp_path) -> dict[str, set[str]]:
    doc = yaml.safe_load((REPO / ".gitlab-ci.yml").read_text())
    work = tmp_path / "gl"
    work.mkdir()
    (work / ".gitlab-ci.yml").write_text((REPO / ".gitlab-ci.yml").read_text())
    subprocess.run(["git", "init", "-q", "-b", "main"], cwd=work, check=True)
    subprocess.run(["git", "add", "-A"], cwd=work, check=True)
    subprocess.run(["git", "commit", "-qm", "ci"], cwd=work, check=True)
    by_trigger: dict[str, set[str]] = {}
    for trigger in TRIGGERS:
        targets = set()
        for job in gitlab_jobs(trigger, work):
            script = doc[job]["script"]
            assert len(script) == 1 and MAKE_CALL.match(script[0]), (
                f".gitlab-ci.yml:{job}: one make ci-* call"
            )
            targets.add(MAKE_CALL.match(script[0]).group(1))
        by_trigger[trigger] = targets
    return by_trigger


# ------------------------------------------------------------------ Jenkins
def block(text: str, start: int) -> str:
    """The text of the brace block that opens at or after `start`."""
    i = text.index("{", start)
    depth = 0
    for j in range(i, len(text)):
        depth += {"{": 1, "}": -1}.get(text[j], 0)
        if depth == 0:
            return text[i + 1 : j]
    raise AssertionError("unbalanced braces in Jenkinsfile")


def sections(body: str) -> list[tuple[str, str | None, str]]:
    """(keyword, stage name or None, inner text) of each `keyword {...}` / `stage('name') {...}` block at
    the top level of a Jenkinsfile block."""
    found, i = [], 0
    while m := re.compile(r"(\w+)\s*(?:\('([^']*)'\))?\s*\{").search(body, i):
        inner = block(body, m.end() - 1)
        found.append((m.group(1), m.group(2), inner))
        i = m.end() + len(inner) + 1
    return found


def jenkins_tree() -> list[dict]:
    """The declarative pipeline's stages, nested as written: name, own `when`, `steps`, its own `agent`
    and `environment` blocks, and the stages it holds (`parallel` branches or sequential `stages`)."""
    text = (REPO / "Jenkinsfile").read_text()
    text = re.sub(r"^\s*//.*$|\s+//\s.*$", "", text, flags=re.M)  # comments (they may hold braces)

    def tree(body: str) -> list[dict]:
        out = []
        for keyword, name, inner in sections(body):
            assert keyword == "stage" and name, f"Jenkinsfile: unexpected {keyword} block among stages"
            parts = {k: v for k, _, v in sections(inner)}
            nested = parts.get("parallel", parts.get("stages"))
            out.append(
                {
                    "name": name,
                    "when": parts.get("when", ""),
                    "steps": parts.get("steps", ""),
                    "agent": parts.get("agent"),
                    "environment": parts.get("environment", ""),
                    "parallel": "parallel" in parts,
                    "children": tree(nested) if nested is not None else [],
                }
            )
        return out

    return tree(block(text, re.search(r"^\s*stages\s*\{", text, re.M).start()))


def jenkins_stages() -> dict[str, tuple[str, str]]:
    """leaf stage name -> (its `when` and those of the stages around it, its steps block), in order."""
    out = {}

    def walk(stages: list[dict], whens: tuple[str, ...]) -> None:
        for stage in stages:
            conditions = (*whens, stage["when"]) if stage["when"].strip() else whens
            if stage["children"]:
                walk(stage["children"], conditions)
            else:
                out[stage["name"]] = ("\n".join(conditions), stage["steps"])

    walk(jenkins_tree(), ())
    return out


def jenkins_leaves() -> dict[str, dict[str, str]]:
    """leaf stage name -> {when, steps, environment (its own and its enclosing stages'), agent (the
    nearest `agent` block: its own or an enclosing stage's; "" for the pipeline's)}."""
    out: dict[str, dict[str, str]] = {}

    def walk(stages: list[dict], whens: tuple[str, ...], envs: tuple[str, ...], agent: str) -> None:
        for stage in stages:
            conditions = (*whens, stage["when"]) if stage["when"].strip() else whens
            environments = (*envs, stage["environment"])
            nearest = stage["agent"] if stage["agent"] is not None else agent
            if stage["children"]:
                walk(stage["children"], conditions, environments, nearest)
            else:
                out[stage["name"]] = {
                    "when": "\n".join(conditions),
                    "steps": stage["steps"],
                    "environment": "\n".join(environments),
                    "agent": nearest,
                }

    walk(jenkins_tree(), (), (), "")
    return out


def jenkins_waits_for() -> dict[str, set[str]]:
    """leaf stage -> the leaf stages it starts after: everything before it in sequence, except what
    runs in another branch of the same `parallel`."""
    waits: dict[str, set[str]] = {}

    def run(stages: list[dict], before: set[str]) -> set[str]:
        done = set(before)
        for stage in stages:
            if stage["parallel"]:
                done |= set().union(*(run([branch], done) for branch in stage["children"]))
            elif stage["children"]:
                done = run(stage["children"], done)
            else:
                waits[stage["name"]] = set(done)
                done.add(stage["name"])
        return done

    run(jenkins_tree(), set())
    return waits


def jenkins_runs_on(when: str, trigger: str) -> bool:
    """Evaluate the `when` conditions this pipeline uses, for a build of the given shape."""
    facts = {
        "merge_request": (True, False, False, False),
        "main": (False, True, False, False),
        "schedule": (False, True, True, False),
        "retrain_request": (False, True, False, True),  # buildWithParameters with RETRAIN_REASON
    }
    change_request, on_main, timer, retrain = facts[trigger]
    if not when.strip():
        return True  # no `when`: the stage runs on every build
    expr = when.replace(";", " ")
    expr = expr.replace("changeRequest()", str(change_request)).replace("branch 'main'", str(on_main))
    expr = expr.replace("triggeredBy 'TimerTrigger'", str(timer))
    expr = re.sub(r"expression\s*\{\s*params\.RETRAIN_REASON\s*\}", str(retrain), expr)
    expr = re.sub(r"expression\s*\{[^}]*\}", "True", expr)  # build-result guards: true on a green build
    expr = re.sub(r"not\s*\{\s*(True|False)\s*\}", lambda m: str(m.group(1) != "True"), expr)
    for _ in range(5):
        expr = re.sub(
            r"anyOf\s*\{([^{}]*)\}", lambda m: str(any(w == "True" for w in m.group(1).split())), expr
        )
        expr = re.sub(
            r"allOf\s*\{([^{}]*)\}", lambda m: str(all(w == "True" for w in m.group(1).split())), expr
        )
        expr = re.sub(r"not\s*\{\s*(True|False)\s*\}", lambda m: str(m.group(1) != "True"), expr)
    words = expr.split()
    assert words and all(w in ("True", "False") for w in words), f"unsupported when: {when!r} -> {expr!r}"
    return all(w == "True" for w in words)


def jenkins_targets() -> dict[str, set[str]]:
    by_trigger: dict[str, set[str]] = {t: set() for t in TRIGGERS}
    for name, (when, steps) in jenkins_stages().items():
        calls = re.findall(r"sh\s+'([^']+)'", steps)
        assert len(calls) == 1 and MAKE_CALL.match(calls[0]), f"Jenkinsfile stage {name}: one make ci-* call"
        for trigger in TRIGGERS:
            if jenkins_runs_on(when, trigger):
                by_trigger[trigger].add(MAKE_CALL.match(calls[0]).group(1))
    return by_trigger


# ------------------------------------------------------------------ tests
def test_the_three_ci_files_call_the_same_make_targets_per_trigger(tmp_path):
    github, gitlab, jenkins = github_targets(), gitlab_targets(tmp_path), jenkins_targets()
    for trigger in TRIGGERS:
        assert github[trigger] == gitlab[trigger] == jenkins[trigger], trigger
    tests = {"ci-verify", "ci-test-e2e", "ci-test-docker"}
    assert github == {
        "merge_request": {"ci-image-publish", *tests, "ci-train", "ci-report"},
        "main": {"ci-image-publish", *tests, "ci-train", "ci-release", "ci-promote"},
        # a retrain never deploys by itself: it opens a merge request, whose pipeline gates and reports
        "schedule": {"ci-image-publish", "ci-retrain"},
        "retrain_request": {"ci-image-publish", "ci-retrain"},
    }


def gitlab_waits_for() -> dict[str, set[str]]:
    """job -> the jobs it starts after (transitively): its `needs`, or without them every job of the
    earlier stages, as GitLab schedules them."""
    doc = yaml.safe_load((REPO / ".gitlab-ci.yml").read_text())
    jobs = {name: job for name, job in doc.items() if isinstance(job, dict) and "script" in job}
    stages = doc["stages"]
    direct = {
        name: {n if isinstance(n, str) else n["job"] for n in job["needs"]}
        if "needs" in job
        else {o for o, other in jobs.items() if stages.index(other["stage"]) < stages.index(job["stage"])}
        for name, job in jobs.items()
    }
    return {name: closure(direct, name) for name in jobs}


def github_waits_for(workflow: str) -> dict[str, set[str]]:
    """job -> the jobs of this workflow it starts after (transitively, through `needs`)."""
    jobs = yaml.safe_load((WORKFLOWS / workflow).read_text())["jobs"]
    direct = {
        name: set([job["needs"]] if isinstance(job.get("needs"), str) else job.get("needs", []))
        for name, job in jobs.items()
    }
    return {name: closure(direct, name) for name in jobs}


def closure(direct: dict[str, set[str]], job: str) -> set[str]:
    seen: set[str] = set()
    todo = list(direct[job])
    while todo:
        if (name := todo.pop()) not in seen:
            seen.add(name)
            todo += direct[name]
    return seen


def test_train_does_not_wait_for_the_unit_tests_and_release_waits_for_everything():
    """The same DAG in the three files: train needs only the CI image (the review report does not wait
    for verify); the slower test jobs follow verify; the report follows train; release (main) follows
    verify, train and both test jobs, so a failing unit test still stops a release."""
    gitlab, jenkins = gitlab_waits_for(), jenkins_waits_for()
    github_mr, github_main = github_waits_for("ci.yml"), github_waits_for("cd.yml")
    for system, mr, main in (
        ("gitlab", gitlab, gitlab),
        ("github", github_mr, github_main),
        ("jenkins", jenkins, jenkins),
    ):
        for waits in (mr, main):
            assert "ci-image" in waits["train"] and "verify" not in waits["train"], system
            assert "verify" in waits["test-e2e"] and "verify" in waits["test-docker"], system
        assert "train" in mr["report"] and "verify" not in mr["report"], system
        assert {"verify", "train", "test-e2e", "test-docker"} <= main["release"], system


def test_every_ci_target_exists_and_is_documented():
    listed = subprocess.run(["make", "help"], cwd=REPO, capture_output=True, text=True, check=True).stdout
    targets = (
        "ci-image-publish",
        "ci-verify",
        "ci-test-e2e",
        "ci-test-docker",
        "ci-train",
        "ci-retrain",
        "ci-report",
        "ci-release",
        "ci-promote",
    )
    for target in targets:
        assert re.search(rf"^\s+{target}\s+\S", listed, re.M), f"make help does not document {target}"
    # one dry run of them all (make stops at, and names, the first that fails): each make start
    # evaluates the Makefile's $(shell ...) lines again
    dry = subprocess.run(["make", "-n", *targets], cwd=REPO, capture_output=True, text=True)
    assert dry.returncode == 0, dry.stderr


def test_no_threshold_or_tool_version_in_ci_yaml():
    for path in [*WORKFLOWS.glob("*.yml"), REPO / ".gitlab-ci.yml", REPO / "Jenkinsfile"]:
        text = path.read_text()
        assert not re.search(r"(roc_auc|threshold|min_)\w*\s*[:=]\s*0?\.\d", text), path
        assert not re.search(r"pip install|npm (install|ci)|==\d", text), (
            f"{path}: installs belong in the Makefile"
        )


def test_github_actions_pinned_by_sha_with_version_comment():
    for path in WORKFLOWS.glob("*.yml"):
        for line in path.read_text().splitlines():
            if "uses:" in line:
                assert re.search(r"uses: [\w.-]+/[\w.-]+@[0-9a-f]{40} # v\d+\.\d+\.\d+$", line.strip(" -")), (
                    line
                )


def test_github_jobs_are_least_privilege_with_timeouts():
    for path in WORKFLOWS.glob("*.yml"):
        doc = yaml.safe_load(path.read_text())
        assert doc["permissions"] == {}, f"{path.name}: default permissions must be empty"
        assert "concurrency" in doc
        for name, job in doc["jobs"].items():
            assert "timeout-minutes" in job and "permissions" in job, f"{path.name}:{name}"
            # only promote and retrain write: they push a branch (the staging record, retrain/<date>) and
            # open a pull request
            writes = name in ("promote", "retrain")
            assert job["permissions"].get("contents") == ("write" if writes else "read"), (
                f"{path.name}:{name}"
            )


def test_actionlint_and_schemas_accept_the_workflows():
    files = [str(p) for p in sorted(WORKFLOWS.glob("*.yml"))]
    lint = subprocess.run([tool("actionlint"), *files], capture_output=True, text=True)
    assert lint.returncode == 0, lint.stdout + lint.stderr
    for schema, targets in (
        ("vendor.github-workflows", files),
        ("vendor.gitlab-ci", [str(REPO / ".gitlab-ci.yml")]),
    ):
        proc = subprocess.run(
            [tool("check-jsonschema"), "--builtin-schema", schema, *targets], capture_output=True, text=True
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.mark.slow
def test_make_lint_hooks_catch_a_broken_workflow(tmp_path):
    """The pre-commit hooks `make lint` runs reject a workflow with a dangling `needs` (actionlint) and
    one with an unknown key (the GitHub workflow schema), naming the file."""
    repo = copy_repository(tmp_path / "repo")
    ci = repo / ".github/workflows/ci.yml"
    ci.write_text(ci.read_text().replace("needs: verify", "needs: verfy").replace("runs-on:", "runs-onn:", 1))
    env = dict(
        os.environ,
        PATH=f"{tool('pre-commit').rsplit('/', 1)[0]}:{REPO / 'tools/node_modules/.bin'}:{os.environ['PATH']}",
    )
    proc = subprocess.run(
        [tool("pre-commit"), "run", "--files", ".github/workflows/ci.yml"],
        cwd=repo,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 1
    assert re.search(r"^actionlint\.+Failed", proc.stdout, re.M) and "verfy" in proc.stdout
    assert re.search(r"^GitHub workflows schema\.+Failed", proc.stdout, re.M)
    clean = subprocess.run(
        [tool("pre-commit"), "run", "--files", ".github/workflows/cd.yml"],
        cwd=repo,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert clean.returncode == 0, clean.stdout


def test_gitlab_release_is_serialised_and_jobs_interruptible():
    doc = yaml.safe_load((REPO / ".gitlab-ci.yml").read_text())
    assert doc["release"]["resource_group"] == "release" and doc["release"]["interruptible"] is False
    assert doc["default"]["interruptible"] is True
    assert doc["workflow"]["auto_cancel"]["on_new_commit"] == "interruptible"
    assert doc["train"]["artifacts"]["when"] == "always"
    assert doc["report"]["needs"] == [{"job": "train", "artifacts": True}]
    # the report also runs after a failed train (gate failed), so the reviewer sees why
    assert [r.get("when") for r in doc["report"]["rules"]] == ["always"]
    assert doc["release"]["variables"]["REGISTRY_PASSWORD"] == "$CI_REGISTRY_PASSWORD"


def test_github_report_runs_after_a_failed_train():
    job = yaml.safe_load((WORKFLOWS / "ci.yml").read_text())["jobs"]["report"]
    assert "always()" in job["if"] and "needs.train.result == 'failure'" in job["if"]


def test_jenkinsfile_declarative_shape():
    text = (REPO / "Jenkinsfile").read_text()
    start = re.search(r"^pipeline\s*\{", text, re.M)
    assert start, "Jenkinsfile: no declarative pipeline block"
    body = block(text, start.start())
    for section in ("options", "triggers", "environment", "stages"):
        assert re.search(rf"^\s{{4}}{section}\b", body, re.M), f"Jenkinsfile: no top-level {section}"
    # no pipeline-wide agent: it would pull the CI image before ci-image publishes it
    assert re.search(r"^\s{4}agent none\s*$", body, re.M), "Jenkinsfile: top-level agent must be none"
    options = block(body, body.index("options"))
    assert "timeout(" in options and "disableConcurrentBuilds" in options
    assert "cron(" in block(body, body.index("triggers"))
    # the stages that run the pipeline keep its reports and model metadata, whatever the outcome
    for stage in ("pipeline", "retrain"):
        inner = block(body, body.index(f"stage('{stage}')") + len(f"stage('{stage}') "))
        post = block(inner, re.search(r"^\s*post\s*\{", inner, re.M).end() - 1)
        assert "always" in post and "archiveArtifacts artifacts: 'reports/**" in post, stage
    stages = jenkins_stages()
    assert list(stages) == [
        "ci-image",
        "verify",
        "test-e2e",
        "test-docker",
        "train",
        "report",
        "retrain",
        "release",
        "promote",
    ]
    # the tests and the pipeline are parallel branches, each with an executor and workspace of its own
    # (train's outputs are never written next to running tests); the pipeline branch's post
    # { archiveArtifacts } collects reports/ and models/
    (checks,) = [s for s in jenkins_tree() if s["parallel"]]
    branches = {b["name"]: b for b in checks["children"]}
    tests, pipeline = (
        next(b for b in branches.values() if name in str(b["children"])) for name in ("verify", "train")
    )
    assert tests is not pipeline and tests["agent"] and pipeline["agent"]
    assert all("make ci-" in steps for _, steps in stages.values())
    assert "withOptionalCredentials" in stages["train"][1] and "lock(" in stages["release"][1]
    # a failed gate fails the build but the report stage still runs; release only on a green build
    assert "catchError(buildResult: 'FAILURE'" in stages["train"][1]
    assert "currentBuild.currentResult == 'SUCCESS'" in stages["release"][0]
    assert "GITHUB_TOKEN" in stages["report"][1] and "GITLAB_TOKEN" in stages["report"][1]


@pytest.mark.slow
def test_jenkinsfile_groovy_syntax():
    proc = subprocess.run(
        [
            tool("npm-groovy-lint"),
            "--noserver",
            "--failon",
            "error",
            "--output",
            "txt",
            str(REPO / "Jenkinsfile"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]


@pytest.mark.slow
def test_groovy_lint_catches_a_syntax_error(tmp_path):
    broken = tmp_path / "Jenkinsfile"
    broken.write_text((REPO / "Jenkinsfile").read_text().replace("stages {", "stages {{", 1))
    proc = subprocess.run(
        [tool("npm-groovy-lint"), "--noserver", "--failon", "error", "--output", "txt", str(broken)],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode != 0


def test_every_job_runs_in_the_pinned_ci_image():
    """The CI image tag pinned in the three files is the hash of what the image is built from, and every
    job runs in it except ci-image (it builds that image with the runner's own Docker engine). release
    builds and pushes images from inside it, with the host's engine: GitLab's runner tagged
    docker-socket (socket binding), the socket GitHub mounts into every job container, Jenkins' agent
    argument."""
    tag = subprocess.run(
        ["make", "-s", "--no-print-directory", "ci-image-tag"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    assert re.fullmatch(r"mlops-ci:[0-9a-f]{12}", tag)
    gitlab = yaml.safe_load((REPO / ".gitlab-ci.yml").read_text())
    assert gitlab["default"]["image"] == f"$CI_REGISTRY_IMAGE/{tag}", "run `make ci-image-pin`"
    for name, job in gitlab.items():
        if isinstance(job, dict) and "script" in job and name != "ci-image":
            assert "image" not in job, f".gitlab-ci.yml:{name} must use the default (CI) image"
            assert "shell-docker" not in job.get("tags", []), f".gitlab-ci.yml:{name}: a shell runner"
    assert gitlab["ci-image"]["tags"] == ["shell-docker"]
    assert gitlab["release"]["tags"] == ["docker-socket"] and "services" not in gitlab["release"]
    for path in WORKFLOWS.glob("*.yml"):
        for name, job in yaml.safe_load(path.read_text())["jobs"].items():
            if name == "ci-image":
                assert "container" not in job
            else:
                assert job["container"]["image"] == "${{ vars.IMAGE_REGISTRY }}/" + tag, f"{path.name}:{name}"
                assert not any("setup-python" in step.get("uses", "") for step in job["steps"]), name
    jenkins = (REPO / "Jenkinsfile").read_text()
    assert set(re.findall(r"mlops-ci:[0-9a-f]{12}", jenkins)) == {tag}
    assert re.search(r"^\s{4}agent none\s*$", jenkins, re.M)  # each stage names its own agent
    for name, stage in jenkins_leaves().items():
        agent = stage["agent"]
        if name == "ci-image":
            assert agent.strip() == "label 'docker'", agent
        else:
            assert "docker {" in agent and tag in agent, f"Jenkinsfile stage {name}: not in the CI image"
    assert "-v /var/run/docker.sock:/var/run/docker.sock" in jenkins_leaves()["release"]["agent"]


@pytest.mark.slow
def test_the_ci_test_jobs_together_run_the_whole_suite(tmp_path):
    """ci-verify, ci-test-e2e and ci-test-docker select disjoint sets of tests whose union is the suite
    (`make test`): nothing is left to this repository's own CI."""
    makefile = (REPO / "Makefile").read_text()

    def marker_expr(target: str) -> str:
        recipe = makefile.split(f"\n{target}:", 1)[1].split("\n\n", 1)[0]
        found = re.search(r'pytest -m (?:"([^"]+)"|(\w+))', recipe)
        assert found, f"Makefile {target}: no `pytest -m` call"
        return found.group(1) or found.group(2)

    exprs = {target: marker_expr(target) for target in ("ci-verify", "ci-test-e2e", "ci-test-docker")}

    # one collection, each test's markers dumped by a small plugin; the -m expressions evaluated on them
    # as pytest evaluates them
    plugin = tmp_path / "dump_markers.py"
    plugin.write_text(
        "import json, os\n"
        "def pytest_collection_finish(session):\n"
        "    marks = {i.nodeid: sorted({m.name for m in i.iter_markers()}) for i in session.items}\n"
        "    open(os.environ['MARKERS_OUT'], 'w').write(json.dumps(marks))\n"
    )
    out = tmp_path / "markers.json"
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "--collect-only",
            "-q",
            "-p",
            "no:cacheprovider",
            "-p",
            "dump_markers",
        ],
        cwd=REPO,
        env=dict(os.environ, MARKERS_OUT=str(out), PYTHONPATH=str(tmp_path)),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-2000:]
    marks = json.loads(out.read_text())
    assert len(marks) > 100
    parts = []
    for expr in exprs.values():
        compiled = Expression.compile(expr)
        parts.append(
            {test for test, names in marks.items() if compiled.evaluate(lambda n, ns=names: n in ns)}
        )
    assert sum(len(p) for p in parts) == len(marks), "a test is selected by two CI jobs"
    assert set().union(*parts) == set(marks), "tests no CI job runs"
    assert parts[2], "no test is marked docker"


@pytest.mark.parametrize(
    ("changed", "skipped"),
    [
        (["deploy/envs/staging/values.yaml"], True),
        (["deploy/envs/staging/values.yaml", "params.yaml"], False),
    ],
)
def test_a_change_only_under_deploy_envs_trains_releases_and_promotes_nothing(tmp_path, changed, skipped):
    """A promotion or rollback commit (only deploy/envs/**) must not retrain, re-register or re-promote
    (that would loop: promote commits to main); any other change runs the jobs."""
    repo = copy_repository(tmp_path / "repo")
    for name in changed:
        path = repo / name
        path.write_text(path.read_text() + "\n# changed\n")
    subprocess.run(["git", "commit", "-qam", "change"], cwd=repo, check=True)
    env = dict(
        os.environ, VENV=str(Path(sys.executable).parent.parent), MLFLOW_TRACKING_URI="sqlite:///unused.db"
    )
    env.pop("MLOPS_DIFF_BASE", None)
    for target, work in (
        ("ci-train", "dvc repro"),
        ("ci-release", "mlops register"),
        ("ci-promote", "mlops promote"),
    ):
        proc = subprocess.run(["make", "-n", target], cwd=repo, env=env, capture_output=True, text=True)
        assert proc.returncode == 0, proc.stderr
        said = re.search(rf"^{target}: only deploy/envs/ changed", proc.stdout, re.M)  # the echo, run
        assert bool(said) is skipped, proc.stdout
        assert (work in proc.stdout) is not skipped, proc.stdout
        if target == "ci-promote":  # a merged production merge request: the aliases follow the records
            assert "mlops sync-aliases" in proc.stdout, proc.stdout
            if not skipped:  # the version the release registered, never the moving alias `candidate`
                assert "--registered reports/registered.json" in proc.stdout, proc.stdout
                assert "--version candidate" not in proc.stdout, proc.stdout
        if target == "ci-release" and not skipped:  # images first, then the version with their digests
            assert proc.stdout.index("docker push") < proc.stdout.index("mlops register --json"), proc.stdout


def test_the_retrain_trigger_and_the_ci_files_agree():
    """`mlops trigger-retrain` sends what the three retrain pipelines read: GitHub's `reason` input of the
    workflow params.yaml names, GitLab's MLOPS_RETRAIN_REASON, Jenkins' RETRAIN_REASON parameter; each
    passes it to `make ci-retrain` as MLOPS_RETRAIN_REASON (the merge request says why)."""
    from mlops.config import load_params
    from mlops.monitor import trigger

    retrain = load_params(REPO / "params.yaml").retrain
    workflow = yaml.safe_load((WORKFLOWS / retrain.github.workflow).read_text())
    assert "reason" in workflow[True]["workflow_dispatch"]["inputs"]
    assert "inputs.reason" in workflow["jobs"]["retrain"]["env"]["MLOPS_RETRAIN_REASON"]
    gitlab = yaml.safe_load((REPO / ".gitlab-ci.yml").read_text())
    assert any(f"${trigger.REASON_VARIABLE}" in rule["if"] for rule in gitlab["retrain"]["rules"])
    assert gitlab["retrain"]["script"] == ["make ci-retrain"]
    jenkins = (REPO / "Jenkinsfile").read_text()
    assert f"string(name: '{trigger.JENKINS_PARAMETER}'" in jenkins
    when, _ = jenkins_stages()["retrain"]
    assert f"params.{trigger.JENKINS_PARAMETER}" in when
    assert re.search(r"MLOPS_RETRAIN_REASON = .*params\.RETRAIN_REASON", jenkins)
    assert 'mlops retrain-mr --reason "$${MLOPS_RETRAIN_REASON' in (REPO / "Makefile").read_text()


def test_a_ci_job_started_by_a_test_ignores_the_callers_test_selection():
    """`make test PYTEST_ARGS='-m "not docker"'` puts PYTEST_ARGS in MAKEFLAGS, which every nested make
    reads: a `make ci-verify` run by a test (gitlab-ci-local's job) then appended the caller's `-m`, which
    replaced its own fast-suite selection and ran the pipeline tests again, without end. The tests start
    nested CI runs with `nested_ci_env`, which leaves the caller's make and pytest settings out."""
    from conftest import nested_ci_env

    caller = dict(os.environ, MAKEFLAGS=" -- PYTEST_ARGS=-m\\ docker", PYTEST_ADDOPTS="-k pipeline")

    def verify_command(env: dict[str, str]) -> str:
        out = subprocess.run(["make", "-n", "ci-verify"], cwd=REPO, env=env, capture_output=True, text=True)
        return next(line.rstrip() for line in out.stdout.splitlines() if "pytest -m" in line)

    assert verify_command(caller).endswith("-m docker")  # the recursion's cause, still make's behaviour
    clean = nested_ci_env(caller)
    assert "PYTEST_ADDOPTS" not in clean and "MAKEFLAGS" not in clean
    assert verify_command(clean).endswith('-m "not e2e and not slow and not docker" -n auto')
