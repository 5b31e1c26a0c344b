"""mlops lock-check: the verdict on whether `dvc repro` reproduced the committed dvc.lock, and its exit code.

Synthetic locks in a real git repository (the command reads the committed lock with `git show`); the
whole flow on the real pipeline is in tests/e2e/test_dvc_pipeline.py.
"""

from __future__ import annotations

import copy
import json
import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

from mlops import cli, lockcheck

from conftest import FIXTURE_PARAMS

LOCK = {
    "schema": "2.0",
    "stages": {
        "fingerprint": {
            "cmd": "mlops fingerprint",
            "deps": [{"path": "src/mlops/fingerprint.py", "md5": "f1"}],
            "params": {"params.yaml": {"ingest": {"source": "demo"}}},
            "outs": [{"path": "data/raw/source.json", "md5": "s1"}],
        },
        "train": {
            "cmd": "mlops train",
            "deps": [{"path": "data/processed/train.parquet", "md5": "d1"}],
            "params": {"params.yaml": {"train": {"lr": 0.001}}},
            "outs": [
                {"path": "models/model.safetensors", "md5": "aaaa1111"},
                {"path": "models/model.json", "md5": "j1"},
            ],
        },
    },
}

# what DVC 3 prints for each stage (the lines lock-check reads)
LOG_RAN = "Running stage 'fingerprint':\n> mlops fingerprint\nRunning stage 'train':\n> mlops train\n"
LOG_RESTORED = (
    "Running stage 'fingerprint':\n> mlops fingerprint\n"
    "Stage 'train' is cached - skipping run, checking out outputs\n"
)
LOG_UP_TO_DATE = "Running stage 'fingerprint':\n> mlops fingerprint\nStage 'train' didn't change, skipping\n"


def test_stage_actions_read_dvcs_messages():
    assert lockcheck.stage_actions(LOG_RAN) == {"fingerprint": "ran", "train": "ran"}
    assert lockcheck.stage_actions(LOG_RESTORED)["train"] == "restored"
    assert lockcheck.stage_actions(LOG_UP_TO_DATE)["train"] == "unchanged"


def test_identical_restored_and_up_to_date():
    rows = lockcheck.compare(LOCK, copy.deepcopy(LOCK))
    assert {r["status"] for r in rows} == {"same"}
    assert lockcheck.verdict(rows, lockcheck.stage_actions(LOG_RAN)) == "identical"
    assert lockcheck.verdict(rows, lockcheck.stage_actions(LOG_RESTORED)) == "restored"
    assert lockcheck.verdict(rows, lockcheck.stage_actions(LOG_UP_TO_DATE)) == "up-to-date"


def test_an_output_with_other_bytes_for_the_same_inputs_differs():
    current = copy.deepcopy(LOCK)
    current["stages"]["train"]["outs"][0]["md5"] = "bbbb2222"
    rows = lockcheck.compare(LOCK, current)
    train = next(r for r in rows if r["stage"] == "train")
    assert train["status"] == "differs"
    assert train["outputs"] == [
        {"path": "models/model.safetensors", "committed": "aaaa1111", "reproduced": "bbbb2222"}
    ]
    assert lockcheck.verdict(rows, {}) == "differs"


def test_changed_inputs_without_a_new_lock_are_stale():
    current = copy.deepcopy(LOCK)
    current["stages"]["train"]["params"]["params.yaml"]["train"]["lr"] = 0.01
    current["stages"]["train"]["outs"][0]["md5"] = "cccc3333"
    rows = lockcheck.compare(LOCK, current)
    train = next(r for r in rows if r["stage"] == "train")
    assert train["status"] == "inputs-changed"
    assert train["inputs"] == ["params.yaml:train"]
    assert lockcheck.verdict(rows, {}) == "stale"


def test_a_changed_source_is_new_data_not_a_failure():
    current = copy.deepcopy(LOCK)
    current["stages"]["fingerprint"]["outs"][0]["md5"] = "s2"
    current["stages"]["train"]["deps"][0]["md5"] = "d2"
    current["stages"]["train"]["outs"][0]["md5"] = "dddd4444"
    assert lockcheck.verdict(lockcheck.compare(LOCK, current), {}) == "source-changed"


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A git repository whose HEAD commits LOCK as dvc.lock, with the fixture params."""
    root = tmp_path / "repo"
    root.mkdir()
    shutil.copy(FIXTURE_PARAMS, root / "params.yaml")
    (root / "dvc.lock").write_text(yaml.safe_dump(LOCK))
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    subprocess.run(["git", "add", "."], cwd=root, check=True)
    subprocess.run(["git", "commit", "-qm", "lock"], cwd=root, check=True)
    return root


def lock_check(repo: Path, *extra: str, params: Path | None = None) -> int:
    return cli.main(
        [
            "--params",
            str(params or repo / "params.yaml"),
            "lock-check",
            "--lock",
            str(repo / "dvc.lock"),
            "--out",
            str(repo / "reports/lock-check.json"),
            "--log",
            str(repo / "repro.log"),
            *extra,
        ]
    )


def test_cli_fails_with_exit_8_naming_each_output_and_both_hashes(repo, monkeypatch, capsys):
    monkeypatch.chdir(repo)
    current = copy.deepcopy(LOCK)
    current["stages"]["train"]["outs"][0]["md5"] = "bbbb2222"
    (repo / "dvc.lock").write_text(yaml.safe_dump(current))
    (repo / "repro.log").write_text(LOG_RAN)
    assert lock_check(repo) == 8
    err = capsys.readouterr().err
    assert "models/model.safetensors aaaa1111 -> bbbb2222" in err, err
    result = json.loads((repo / "reports/lock-check.json").read_text())
    assert result["verdict"] == "differs"
    assert "| train | `models/model.safetensors` | `aaaa1111` | `bbbb2222` |" in lockcheck.markdown(result)


def test_cli_reports_without_failing_when_params_turn_the_failure_off(repo, monkeypatch):
    monkeypatch.chdir(repo)
    params = yaml.safe_load((repo / "params.yaml").read_text())
    params["reproducibility"]["fail_on_mismatch"] = False
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    current = copy.deepcopy(LOCK)
    current["stages"]["train"]["outs"][0]["md5"] = "bbbb2222"
    (repo / "dvc.lock").write_text(yaml.safe_dump(current))
    (repo / "repro.log").write_text(LOG_RAN)
    assert lock_check(repo) == 0
    assert json.loads((repo / "reports/lock-check.json").read_text())["verdict"] == "differs"


def test_cli_passes_an_identical_run(repo, monkeypatch, capsys):
    monkeypatch.chdir(repo)
    (repo / "repro.log").write_text(LOG_RAN)
    assert lock_check(repo, "--json") == 0
    out = json.loads(capsys.readouterr().out)
    assert out["verdict"] == "identical"
    assert "reproduced: identical" in out["summary"]


def test_cli_without_a_committed_lock_is_a_config_error(tmp_path, monkeypatch, capsys):
    root = tmp_path / "nogit"
    root.mkdir()
    (root / "dvc.lock").write_text(yaml.safe_dump(LOCK))
    monkeypatch.chdir(root)
    assert lock_check(root, params=FIXTURE_PARAMS) == 2
    assert "no dvc.lock committed at HEAD" in capsys.readouterr().err


def test_cpu_level_names_what_is_missing():
    v3 = "model name\t: Some CPU\nflags\t\t: fpu sse2 avx avx2 fma bmi2\n"
    old = "model name\t: Old CPU\nflags\t\t: fpu sse2 sse4_2 avx\n"
    from mlops import numerics

    level = numerics.cpu_level(v3)
    assert level["flags_missing"] == [] and level["model"] == "Some CPU"
    assert numerics.cpu_level(old)["flags_missing"] == ["avx2", "fma"]
    assert numerics.cpu_level(old)["in_scope"] is False
