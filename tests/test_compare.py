"""The champion comparison's statistics and verdicts (mlops.compare) on synthetic scores, and its params.

Where it runs against real registered models: tests/registry/test_report.py (review time) and
tests/deploy/test_promote.py (promotion time, exit 6).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml

from mlops import compare
from mlops.config import parse_params
from mlops.errors import ConfigError

from conftest import FIXTURE_PARAMS


def _synthetic(n: int = 1500, seed: int = 1):
    rng = np.random.default_rng(seed)
    y = rng.integers(0, 2, n)
    good = np.clip(0.5 + 0.3 * (y - 0.5) * 2 * rng.uniform(0.2, 1.0, n) + rng.normal(0, 0.15, n), 0.01, 0.99)
    return y, good, rng


def by_metric(result: dict) -> dict[str, dict]:
    return {r["metric"]: r for r in result["metrics"]}


@pytest.mark.parametrize("case", ["identical", "noise", "worse", "worse_within_margin", "better"])
def test_paired_bootstrap_decisions(params, case):
    """Identical, within-noise and better candidates pass; a significant regression beyond the margin
    fails; a significant regression within the margin passes."""
    y, champ, rng = _synthetic()
    if case == "identical":
        cand = champ.copy()
    elif case == "noise":
        cand = np.clip(champ + rng.normal(0, 0.003, len(y)), 0.01, 0.99)
    elif case == "better":
        cand, champ = champ, np.clip(champ + rng.normal(0, 0.25, len(y)), 0.01, 0.99)
    else:
        cand = np.clip(champ + rng.normal(0, 0.25, len(y)), 0.01, 0.99)  # much noisier scores
    c = params.champion
    if case == "worse_within_margin":
        c = c.model_copy(update={"max_regression": {"roc_auc": 0.5}})
    result = compare.paired(c, y, cand, 0.5, champ, 0.5, 10)
    rows = by_metric(result)
    auc = rows["roc_auc"]
    lo, hi = auc["ci"]
    assert lo <= auc["diff"] <= hi and result["rows"] == len(y)
    assert set(rows) == {"roc_auc", "pr_auc", "f1", "precision", "recall", "accuracy", "log_loss", "ece"}
    assert "verdict" not in rows["f1"]  # shown, not compared (not in max_regression)
    if case == "identical":
        assert auc["diff"] == 0 and lo == hi == 0 and auc["verdict"] == "pass"
        assert rows["log_loss"]["verdict"] == "pass" and result["passed"]
    elif case == "noise":
        assert abs(auc["diff"]) < 0.005 and auc["verdict"] == "pass" and result["passed"]
    elif case == "better":
        assert auc["diff"] > 0.01 and lo > 0 and not auc["significant"] and result["passed"]
    elif case == "worse":
        assert auc["significant"] and auc["regression"] > 0.01 and auc["verdict"] == "fail"
        assert hi < 0 and not result["passed"] and "roc_auc" in result["failed"]
        log_loss = rows["log_loss"]  # lower is better: a regression is an increase
        assert log_loss["diff"] > 0 and log_loss["regression"] == log_loss["diff"]
    else:
        assert auc["significant"] and auc["verdict"] == "pass" and result["passed"]


def test_bootstrap_is_seeded(params):
    y, champ, rng = _synthetic()
    cand = np.clip(champ + rng.normal(0, 0.05, len(y)), 0.01, 0.99)
    runs = [compare.paired(params.champion, y, cand, 0.5, champ, 0.5, 10) for _ in range(2)]
    assert runs[0] == runs[1]


def test_refusal_names_metric_difference_interval_and_bound(params):
    y, champ, rng = _synthetic()
    cand = np.clip(champ + rng.normal(0, 0.25, len(y)), 0.01, 0.99)
    result = compare.paired(params.champion, y, cand, 0.5, champ, 0.5, 10)
    result["champion"] = {"env": "production", "name": "churn-mlp", "version": "3", "sha256": "a" * 64}
    auc = by_metric(result)["roc_auc"]
    message = compare.refusal(result, "model 'churn-mlp' version 4")
    assert "\n" not in message
    assert "model 'churn-mlp' version 4 regresses against production's churn-mlp version 3" in message
    assert f"roc_auc {auc['candidate']:.4f} vs {auc['champion']:.4f}" in message
    assert f"Δ {auc['diff']:+.4f}" in message
    assert f"95% CI [{auc['ci'][0]:+.4f}, {auc['ci'][1]:+.4f}]" in message
    assert "> bound 0.01 (champion.max_regression.roc_auc)" in message
    lines = compare.markdown({**result, "champion": {**result["champion"], "record": "r.yaml"}}, Path("r"))
    text = "\n".join(lines)
    assert "❌ significant regression in roc_auc" in text and "will refuse this candidate (exit 6)" in text
    assert f"| roc_auc | {auc['champion']:.4f} | {auc['candidate']:.4f} | {auc['diff']:+.4f} |" in text


def test_no_record_says_so():
    text = "\n".join(compare.markdown(None, Path("deploy/envs/production/model.yaml")))
    assert "No promotion record at `deploy/envs/production/model.yaml`" in text


def test_champion_is_its_own_params_section():
    """`champion` is a top-level section (no stage reads it); unknown keys and metrics are errors."""
    data = yaml.safe_load(open(FIXTURE_PARAMS))
    assert "champion" in data and "champion" not in data["gate"]
    data["champion"]["max_regression"]["auroc"] = 0.01
    with pytest.raises(ConfigError, match=r"champion\.max_regression\.auroc: unknown metric"):
        parse_params(data)
    data = yaml.safe_load(open(FIXTURE_PARAMS))
    data["champion"]["bootstrap"]["sead"] = 1
    with pytest.raises(ConfigError, match=r"champion\.bootstrap\.sead: unknown key"):
        parse_params(data)
    data = yaml.safe_load(open(FIXTURE_PARAMS))
    del data["champion"]["bootstrap"]["seed"]
    with pytest.raises(ConfigError, match=r"champion\.bootstrap\.seed: missing required key"):
        parse_params(data)
