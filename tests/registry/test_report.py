"""`mlops report`: the review document (with and without a champion, real `dvc metrics|params diff` in a
temp git repository), the champion comparison at review time against the real MLflow server, and `--post`
against a local HTTP TEST DOUBLE of the GitHub and GitLab REST APIs."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from mlops.review_comment import MARKER

from . import forge_double
from .conftest import copy_workspace, gate_args, register_args, set_gate, write_record

# slow: each test runs `mlops report`, whose `dvc metrics diff` / `dvc params diff` start DVC in a temp
# git repository (2-6 s a test, ~45 s for the module); the ci-test-e2e job runs them
pytestmark = pytest.mark.slow

TOKEN = "s3cr3t-token-value-do-not-print"  # pragma: allowlist secret (a fake, for the test double)
FORGE_VARS = (
    "GITHUB_ACTIONS",
    "GITHUB_REPOSITORY",
    "GITHUB_REF",
    "GITHUB_EVENT_PATH",
    "GITHUB_TOKEN",
    "GITHUB_API_URL",
    "GITHUB_BASE_REF",
    "GITLAB_CI",
    "CI_API_V4_URL",
    "CI_PROJECT_ID",
    "CI_MERGE_REQUEST_IID",
    "CI_MERGE_REQUEST_TARGET_BRANCH_NAME",
    "GITLAB_TOKEN",
    "MLOPS_FORGE",
    "MLOPS_MR_NUMBER",
    "CHANGE_TARGET",
)


@pytest.fixture(autouse=True)
def no_forge_env(monkeypatch):
    """Tests run inside real CI too: start every test without the CI's forge variables."""
    for var in FORGE_VARS:
        monkeypatch.delenv(var, raising=False)


def report_args(ws, *extra: str) -> list[str]:
    return [
        "report",
        "--gate",
        str(ws.root / "reports/gate.json"),
        "--metrics",
        str(ws.metrics),
        "--plots-dir",
        str(ws.plots),
        "--model-dir",
        str(ws.models),
        "--data",
        str(ws.raw),
        "--test",
        str(ws.processed / "test.parquet"),
        "--champion",
        str(ws.root / "deploy/envs/production/model.yaml"),
        "--out",
        str(ws.root / "reports/review/report.md"),
        *extra,
    ]


def git(*args: str, cwd) -> None:
    subprocess.run(["git", *args], cwd=cwd, check=True, capture_output=True, timeout=60)


def test_report_without_champion_or_git(gated, tmp_path, monkeypatch):
    ws = copy_workspace(gated, tmp_path / "ws")
    monkeypatch.chdir(ws.root)  # not a git repository: the diffs are reported as unavailable
    assert ws.mlops(*report_args(ws, "--target", "main")) == 0
    text = (ws.root / "reports/review/report.md").read_text()
    assert text.startswith(MARKER)
    gate = json.loads((ws.root / "reports/gate.json").read_text())
    assert "gate ✅ passed" in text and gate["rules"]
    for rule in gate["rules"]:  # the gate table, one row per rule of the gate report
        assert f"| `{rule['id']}` |" in text, rule["id"]
    assert "No promotion record at" in text and "champion: none in production" in text
    assert "### Metrics vs target branch `main`" in text and "_not available:" in text
    slices = json.loads(ws.metrics.read_text())["slices"]
    assert slices
    for group, values in slices.items():  # the slice table, one row per slice of metrics.json
        for key, s in values.items():
            assert f"| {group}={key} | {s['rows']} |" in text, (group, key)
    meta = json.loads((ws.models / "model.json").read_text())
    assert meta["data_md5"] in text and meta["weights"]["sha256"] in text and "**Intended use**" in text
    for name in ("roc", "pr", "calibration", "confusion"):
        png = ws.root / f"reports/review/plots/{name}.png"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
        assert f"(plots/{name}.png)" in text


def test_report_shows_whether_ci_reproduced_the_lock(gated, tmp_path, monkeypatch):
    """CI's lock check (reports/lock-check.json): the verdict in the title, each differing output listed
    with both hashes; without the file the report says it was not checked."""
    from mlops import lockcheck

    ws = copy_workspace(gated, tmp_path / "ws")
    monkeypatch.chdir(ws.root)
    assert ws.mlops(*report_args(ws, "--target", "main")) == 0
    assert "_not checked: no " in (ws.root / "reports/review/report.md").read_text()
    rows = [
        {
            "stage": "train",
            "status": "differs",
            "action": "ran",
            "inputs": [],
            "outputs": [{"path": "models/model.safetensors", "committed": "aa11", "reproduced": "bb22"}],
        }
    ]
    check = {"verdict": "differs", "ref": "HEAD", "stages": rows, "cpu": {"in_scope": True}}
    (ws.root / "reports/lock-check.json").write_text(json.dumps(check))
    assert ws.mlops(*report_args(ws, "--target", "main")) == 0
    text = (ws.root / "reports/review/report.md").read_text()
    assert "· dvc.lock differs" in text.splitlines()[1]
    assert lockcheck.summary(check) in text
    assert "| train | `models/model.safetensors` | `aa11` | `bb22` |" in text


def register_champion(ws, name: str, record: Path) -> str:
    """Register a workspace's model on the real server and name it in a production record (standing in
    for `mlops promote`); returns its weights' sha256."""
    assert ws.mlops(*register_args(ws, name)) == 0
    sha = json.loads((ws.models / "model.json").read_text())["weights"]["sha256"]
    write_record(record, name, "1", sha)
    return sha


@pytest.mark.slow
def test_report_with_champion_and_dvc_diffs(gated, tmp_path, monkeypatch, server_uri, unique_name):
    """Two commits: `main` (target) and a branch that changed params and improved metrics. Production
    runs the same model: the comparison on the same rows finds no difference at all."""
    ws = copy_workspace(gated, tmp_path / "ws")
    repo = ws.root
    (repo / "dvc.yaml").write_text("metrics:\n  - reports/metrics.json\nparams:\n  - params.yaml\n")
    (repo / ".gitignore").write_text("data/\nmodels/\nreports/plots/\nreports/review/\nreports/gate.*\n")
    new_metrics, new_params = ws.metrics.read_text(), ws.params.read_text()
    # the target branch's values are derived from this pipeline's outputs, whatever they are
    auc = json.loads(new_metrics)["test"]["roc_auc"]
    old = json.loads(new_metrics)
    old["test"]["roc_auc"] = auc - 0.04
    ws.metrics.write_text(json.dumps(old))
    params = yaml.safe_load(new_params)
    epochs = params["train"]["epochs"]
    params["train"]["epochs"] = epochs + 10
    ws.params.write_text(yaml.safe_dump(params, sort_keys=False))
    git("init", "-q", "-b", "main", cwd=repo)
    subprocess.run([sys.executable, "-m", "dvc", "init", "-q"], cwd=repo, check=True, timeout=120)
    git("add", "-A", cwd=repo)
    git("commit", "-q", "-m", "target", cwd=repo)
    git("checkout", "-q", "-b", "feature", cwd=repo)
    ws.metrics.write_text(new_metrics)
    ws.params.write_text(new_params)
    git("commit", "-q", "-am", "better model", cwd=repo)

    sha = register_champion(ws, unique_name, repo / "deploy/envs/production/model.yaml")
    monkeypatch.chdir(repo)
    assert ws.mlops(*report_args(ws, "--target", "main")) == 0
    text = (repo / "reports/review/report.md").read_text()
    metrics_rows = [line for line in text.splitlines() if line.startswith("| `test.roc_auc`")]
    expected = f"| {auc - 0.04:.4f} | {auc:.4f} | {auc - (auc - 0.04):+.4f} |"
    assert metrics_rows and expected in metrics_rows[0], (expected, metrics_rows)
    params_rows = [line for line in text.splitlines() if line.startswith("| `train.epochs`")]
    assert params_rows and f"| {epochs + 10} | {epochs} |" in params_rows[0], params_rows
    assert f"Champion: `{unique_name}` version 1 (sha256 `{sha[:12]}`)" in text
    assert "champion ✅ no significant regression" in text.splitlines()[1]  # the title
    rows = len(pd.read_parquet(ws.processed / "test.parquet"))
    assert f"Both models scored on the same {rows} test rows" in text
    same = r"\| (\d\.\d{4}) \| \1 \| \+0\.0000 \| \[\+0\.0000, \+0\.0000\] \| regression ≤ 0\.01 "
    assert re.search(r"\| roc_auc " + same + r".*\| ✅ pass \|", text), text
    assert "**Champion comparison: ✅ no significant regression**" in text


@pytest.mark.slow
def test_report_shows_a_significant_regression_and_exits_0(
    gated, degraded, tmp_path, monkeypatch, server_uri, unique_name
):
    """A clearly worse candidate than production's model: the report shows the metric, both values,
    the difference, the interval and the verdict in its title and section; the exit code stays 0 (the
    verdict is enforced by `mlops promote`, exit 6)."""
    ws = copy_workspace(degraded, tmp_path / "ws")
    set_gate(ws, **{"metrics.min": {"roc_auc": 0.5}, "metrics.max": {}, "slices.min": {}})
    assert ws.mlops(*gate_args(ws), "--no-fail") == 0
    register_champion(gated, unique_name, ws.root / "deploy/envs/production/model.yaml")
    monkeypatch.chdir(ws.root)
    assert ws.mlops(*report_args(ws, "--target", "main")) == 0
    text = (ws.root / "reports/review/report.md").read_text()
    title = text.splitlines()[1]
    assert "champion ❌ significant regression (roc_auc" in title and "promotion would be refused" in title
    row = next(line for line in text.splitlines() if line.startswith("| roc_auc |"))
    champ, cand, diff, ci = (cell.strip() for cell in row.split("|")[2:6])
    assert float(cand) < float(champ) - 0.01
    assert float(diff) == pytest.approx(float(cand) - float(champ), abs=2e-4)
    lo, hi = (float(x) for x in ci.strip("[]").split(","))
    assert lo <= float(diff) <= hi < 0 and "❌ significant regression" in row
    assert "`mlops promote --env production` will refuse this candidate (exit 6)" in text


@pytest.mark.slow
def test_report_with_a_record_needs_the_registry_and_the_test_rows(gated, tmp_path, monkeypatch, capsys):
    """With a production record the comparison is never skipped: an unreachable registry and missing
    test rows are errors naming what is missing (no report claims a comparison it did not run)."""
    ws = copy_workspace(gated, tmp_path / "ws")
    sha = json.loads((ws.models / "model.json").read_text())["weights"]["sha256"]
    write_record(ws.root / "deploy/envs/production/model.yaml", "churn-mlp", "3", sha)
    monkeypatch.chdir(ws.root)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")  # nothing listens there
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    capsys.readouterr()
    assert ws.mlops(*report_args(ws, "--target", "main")) == 5
    err = capsys.readouterr().err
    assert "deploy/envs/production/model.yaml" in err and "registry http://127.0.0.1:9 unavailable" in err
    (ws.processed / "test.parquet").unlink()
    assert ws.mlops(*report_args(ws, "--target", "main")) == 3
    err = capsys.readouterr().err
    assert "test.parquet" in err and "dvc pull" in err
    assert not (ws.root / "reports/review/report.md").exists()


# ---------------------------------------------------------------- posting (TEST DOUBLE of the forges)
FORGES = {
    "github": lambda url: {
        "GITHUB_ACTIONS": "true",
        "GITHUB_REPOSITORY": "acme/churn",
        "GITHUB_REF": "refs/pull/7/merge",
        "GITHUB_API_URL": f"{url}/github",
        "GITHUB_TOKEN": TOKEN,
    },
    "gitlab": lambda url: {
        "GITLAB_CI": "true",
        "CI_API_V4_URL": f"{url}/gitlab/api/v4",
        "CI_PROJECT_ID": "acme/churn",
        "CI_MERGE_REQUEST_IID": "5",
        "GITLAB_TOKEN": TOKEN,
    },
}
EXPECTED = {  # thread key in the double, collection path, item path prefix, update method, auth header
    "github": (
        "github:acme/churn/7",
        "/github/repos/acme/churn/issues/7/comments",
        "/github/repos/acme/churn/issues/comments/",
        "PATCH",
        ("Authorization", f"Bearer {TOKEN}"),
    ),
    "gitlab": (
        "gitlab:acme%2Fchurn/5",
        "/gitlab/api/v4/projects/acme%2Fchurn/merge_requests/5/notes",
        "/gitlab/api/v4/projects/acme%2Fchurn/merge_requests/5/notes/",
        "PUT",
        ("PRIVATE-TOKEN", TOKEN),
    ),
}


@pytest.fixture(scope="module")
def post_ws(gated, tmp_path_factory):
    return copy_workspace(gated, tmp_path_factory.mktemp("post") / "ws")


@pytest.mark.parametrize("forge", ["github", "gitlab"])
def test_post_creates_then_updates_one_comment(post_ws, forge, monkeypatch, capsys):
    ws = post_ws
    monkeypatch.chdir(ws.root)
    thread, collection, item_prefix, update_method, (auth_name, auth_value) = EXPECTED[forge]
    with forge_double.running(TOKEN) as double:
        other = double.add(thread, "LGTM, someone else's comment")
        for var, value in FORGES[forge](double.url).items():
            monkeypatch.setenv(var, value)
        assert ws.mlops(*report_args(ws, "--target", "main", "--post")) == 0
        assert ws.mlops(*report_args(ws, "--target", "main", "--post")) == 0
    comments = double.comments[thread]
    assert [c["id"] for c in comments][0] == other and len(comments) == 2  # updated, not duplicated
    ours = comments[1]
    assert ours["body"].startswith(MARKER) and "## Model review" in ours["body"]
    assert ours["author"] == double.user
    calls = [(r["method"], r["path"]) for r in double.requests]
    user = "/github/user" if forge == "github" else "/gitlab/api/v4/user"
    assert calls == [
        ("GET", user),
        ("GET", collection),
        ("POST", collection),
        ("GET", user),
        ("GET", collection),
        (update_method, f"{item_prefix}{ours['id']}"),
    ]
    for r in double.requests:
        assert r["headers"].get(auth_name.lower()) == auth_value  # header names are case-insensitive
        if r["body"] is not None:
            assert set(json.loads(r["body"])) == {"body"}
    out = capsys.readouterr()
    assert TOKEN not in out.out + out.err
    assert TOKEN not in (ws.root / "reports/review/report.md").read_text()


@pytest.mark.parametrize("forge", ["github", "gitlab"])
def test_marker_in_another_users_comment_is_never_updated(post_ws, forge, monkeypatch):
    """Anyone can paste the marker into a comment; the report must not overwrite (or hide behind) it."""
    ws = post_ws
    monkeypatch.chdir(ws.root)
    thread, _, item_prefix, update_method, _ = EXPECTED[forge]
    planted = f"{MARKER}\n## Model review: gate ✅ passed (not written by the bot)"
    with forge_double.running(TOKEN) as double:
        theirs = double.add(thread, planted, author=forge_double.SOMEONE)
        for var, value in FORGES[forge](double.url).items():
            monkeypatch.setenv(var, value)
        assert ws.mlops(*report_args(ws, "--target", "main", "--post")) == 0
        assert ws.mlops(*report_args(ws, "--target", "main", "--post")) == 0
    comments = double.comments[thread]
    assert comments[0] == {"id": theirs, "body": planted, "author": forge_double.SOMEONE}  # untouched
    assert len(comments) == 2, "the bot must post its own comment next to the planted one"
    ours = comments[1]
    assert ours["author"] == forge_double.BOT and "## Model review" in ours["body"]
    updates = [r["path"] for r in double.requests if r["method"] == update_method]
    assert updates == [f"{item_prefix}{ours['id']}"]  # the second run updated the bot's own comment


def test_github_actions_token_updates_only_the_actions_bots_comment(post_ws, monkeypatch):
    """GITHUB_TOKEN cannot read GET /user (403): its comments are recognised as `github-actions[bot]`'s."""
    ws = post_ws
    monkeypatch.chdir(ws.root)
    thread, _, item_prefix, _, _ = EXPECTED["github"]
    # a user whose login looks like the bot's, without the reserved `[bot]` suffix and type
    impostor = {"id": 77, "login": "github-actions", "type": "User"}
    with forge_double.running(TOKEN, installation=True) as double:
        planted = double.add(thread, MARKER + "\nfake report", author=impostor)
        for var, value in FORGES["github"](double.url).items():
            monkeypatch.setenv(var, value)
        assert ws.mlops(*report_args(ws, "--target", "main", "--post")) == 0
        assert ws.mlops(*report_args(ws, "--target", "main", "--post")) == 0
    comments = double.comments[thread]
    assert [c["id"] for c in comments][0] == planted and comments[0]["body"] == MARKER + "\nfake report"
    assert len(comments) == 2 and comments[1]["author"] == forge_double.ACTIONS_BOT
    assert [r["path"] for r in double.requests if r["method"] == "PATCH"] == [
        f"{item_prefix}{comments[1]['id']}"
    ]


@pytest.mark.parametrize("forge", ["github", "gitlab"])
def test_missing_token_writes_report_and_exits_0(post_ws, forge, monkeypatch, capsys):
    ws = post_ws
    monkeypatch.chdir(ws.root)
    (ws.root / "reports/review/report.md").unlink(missing_ok=True)
    with forge_double.running(TOKEN) as double:
        for var, value in FORGES[forge](double.url).items():
            monkeypatch.setenv(var, value)
        monkeypatch.delenv("GITHUB_TOKEN" if forge == "github" else "GITLAB_TOKEN")
        assert ws.mlops(*report_args(ws, "--target", "main", "--post")) == 0
    assert double.requests == []
    err = capsys.readouterr().err
    assert "not posted" in err and ("GITHUB_TOKEN" if forge == "github" else "GITLAB_TOKEN") in err
    assert (ws.root / "reports/review/report.md").is_file()


def test_rejected_token_fails_without_leaking_it(post_ws, monkeypatch, capsys):
    ws = post_ws
    monkeypatch.chdir(ws.root)
    with forge_double.running("the-right-token") as double:
        for var, value in FORGES["github"](double.url).items():
            monkeypatch.setenv(var, value)
        assert ws.mlops(*report_args(ws, "--target", "main", "--post")) == 1
    out = capsys.readouterr()
    assert "HTTP 401" in out.err and "github API GET /user" in out.err
    assert TOKEN not in out.out + out.err


def test_post_outside_ci_is_skipped(post_ws, monkeypatch, capsys):
    monkeypatch.chdir(post_ws.root)
    assert post_ws.mlops(*report_args(post_ws, "--target", "main", "--post")) == 0
    assert "no GitHub Actions or GitLab CI environment" in capsys.readouterr().err


def test_github_pr_number_from_event_file(tmp_path):
    from mlops import review_comment

    event = tmp_path / "event.json"
    event.write_text(json.dumps({"pull_request": {"number": 42}}))
    target = review_comment.detect(
        {
            "GITHUB_ACTIONS": "true",
            "GITHUB_REPOSITORY": "a/b",
            "GITHUB_EVENT_PATH": str(event),
            "GITHUB_TOKEN": "x",
        }
    )
    assert target.comments_path == "/repos/a/b/issues/42/comments"
    assert TOKEN not in repr(review_comment.detect({**FORGES["github"]("http://h")}))
