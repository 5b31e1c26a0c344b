"""mlops.expectations on a model whose behaviour is known by construction, and the `expectations`
section's cross-checks against the schema (template tests: no params.yaml of a project involved)."""

from __future__ import annotations

import re

import pandas as pd
import pytest
import torch
import yaml

from mlops import expectations
from mlops.config import parse_params
from mlops.errors import ConfigError
from mlops.features import Preprocessor
from mlops.model import MLP, LoadedModel
from mlops.params.expectations import Band, Directional, Invariance, Minimum

from conftest import FIXTURE_PARAMS

ROWS = pd.DataFrame(
    {
        "row_id": [1, 2, 3, 4, 5, 6],
        "x": [0.0, 2.0, 4.0, 6.0, 8.0, 10.0],
        "c": ["a", "b", "a", "b", "a", "b"],
    }
)


@pytest.fixture(scope="module")
def model() -> LoadedModel:
    """logit = 3 * standardised x + (c == "a") - (c == "b"): rises with x, lower for "b"."""
    pre = Preprocessor.fit(ROWS, ["x"], {"c": ["a", "b"]})
    net = MLP(pre.width, [])
    with torch.no_grad():
        net.net[0].weight.copy_(torch.tensor([[3.0, 1.0, -1.0]]))
        net.net[0].bias.zero_()
    net.eval()
    meta = {
        "name": "known",
        "decision_threshold": 0.5,
        "label": {"column": "y", "classes": ["neg", "pos"], "positive": "pos"},
        "features": [
            {"name": "x", "kind": "numeric", "dtype": "FP64", "min": 0, "max": 10, "nullable": False},
            {
                "name": "c",
                "kind": "categorical",
                "dtype": "BYTES",
                "categories": ["a", "b"],
                "nullable": False,
            },
        ],
    }
    return LoadedModel(meta, net, pre)


def test_directional_share_counts_only_rows_the_change_applies_to(model):
    """+3 on x: the rows at 8 and 10 would leave [0, 10] and are left out; the rest all rise."""
    up = expectations.directional(
        model, ROWS, Directional(feature="x", change=3, direction="up", min_share=1.0)
    )
    assert (up.rows, up.value, up.passed) == (4, 1.0, True)
    down = expectations.directional(
        model, ROWS, Directional(feature="x", change=3, direction="down", min_share=0.5)
    )
    assert (down.value, down.passed) == (0.0, False)


def test_directional_set_skips_rows_already_at_the_value(model):
    """Setting c to "b" changes only the three "a" rows, each of which goes down."""
    out = expectations.directional(
        model, ROWS, Directional(feature="c", set="b", direction="down", min_share=1.0)
    )
    assert (out.rows, out.value, out.passed) == (3, 1.0, True)


def test_invariance_holds_for_the_id_and_fails_for_an_input(model):
    same = expectations.invariance(model, ROWS, Invariance(feature="row_id", change=100, max_delta=0.0))
    assert (same.rows, same.value, same.passed) == (6, 0.0, True)
    moved = expectations.invariance(model, ROWS, Invariance(feature="c", set="a", max_delta=0.01))
    assert moved.rows == 3 and moved.value > 0.01 and not moved.passed


def test_minimum_functionality_on_the_matching_rows(model):
    high = Minimum(where={"x": Band(min=7, max=10), "c": ["a", "b"]}, expect="pos", min_share=1.0)
    out = expectations.minimum(model, ROWS, high)
    assert (out.rows, out.value, out.passed) == (2, 1.0, True)
    wrong = Minimum(where={"x": Band(min=6, max=10)}, expect="neg", min_share=0.5)
    assert not expectations.minimum(model, ROWS, wrong).passed


def test_an_expectation_no_row_qualifies_for_fails(model):
    """Nothing checked is not a pass: +20 takes every row past max."""
    out = expectations.directional(
        model, ROWS, Directional(feature="x", change=20, direction="up", min_share=0.1)
    )
    assert (out.rows, out.value, out.passed) == (0, None, False)
    none = expectations.minimum(
        model, ROWS, Minimum(where={"x": Band(min=11, max=12)}, expect="pos", min_share=0.1)
    )
    assert (none.rows, none.passed) == (0, False)


def test_evaluate_returns_every_declared_expectation_in_order(model):
    from mlops.params.expectations import ExpectationsParams

    declared = ExpectationsParams(
        directional=[Directional(feature="x", change=1, direction="up", min_share=1.0)],
        invariance=[Invariance(feature="row_id", set="other", max_delta=0.0)],
        minimum=[Minimum(where={"c": ["a"]}, expect="pos", min_share=0.5)],
    )
    outcomes = expectations.evaluate(declared, model, ROWS)
    assert [o.kind for o in outcomes] == ["directional", "invariance", "minimum"]
    assert all(o.passed for o in outcomes), [o.as_dict() for o in outcomes]


def edited(section: dict) -> dict:
    data = yaml.safe_load(FIXTURE_PARAMS.read_text())
    data["expectations"] = {"directional": [], "invariance": [], "minimum": [], **section}
    return data


@pytest.mark.parametrize(
    ("section", "message"),
    [
        (
            {"directional": [{"feature": "nope", "change": 1, "direction": "up", "min_share": 0.9}]},
            "expectations.directional.0.feature: 'nope' is not a schema column",
        ),
        (
            {"directional": [{"feature": "contract", "change": 1, "direction": "up", "min_share": 0.9}]},
            "expectations.directional.0.change: 'contract' is categorical",
        ),
        (
            {"invariance": [{"feature": "contract", "set": "Ten year", "max_delta": 0.0}]},
            "expectations.invariance.0.set: 'Ten year' is not a category of 'contract'",
        ),
        (
            {"invariance": [{"feature": "tenure", "change": 1, "set": 3, "max_delta": 0.0}]},
            "give exactly one of `change` or `set`",
        ),
        (
            {"minimum": [{"where": {"contract": ["Two year"]}, "expect": "Maybe", "min_share": 0.9}]},
            "expectations.minimum.0.expect: 'Maybe' is not a label class",
        ),
        (
            {"minimum": [{"where": {"tenure": ["Two year"]}, "expect": "No", "min_share": 0.9}]},
            "expectations.minimum.0.where.tenure: categories need a categorical column",
        ),
        (
            {"minimum": [{"where": {"contract": {"min": 0, "max": 1}}, "expect": "No", "min_share": 0.9}]},
            "expectations.minimum.0.where.contract: a {min, max} band needs a numeric schema column",
        ),
    ],
)
def test_expectations_are_checked_against_the_schema(section, message):
    with pytest.raises(ConfigError, match=re.escape(message)):
        parse_params(edited(section))
