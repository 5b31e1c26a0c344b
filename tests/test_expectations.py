"""mlops.expectations on models whose behaviour is known by construction (one per task), and the
`expectations` section's cross-checks against the schema and its task (template tests: no params.yaml
of a project involved)."""

from __future__ import annotations

import re

import numpy as np
import pandas as pd
import pytest
import task_tables
import torch
import yaml

from mlops import cli, expectations
from mlops.config import parse_params
from mlops.errors import ConfigError
from mlops.features import Preprocessor
from mlops.model import MLP, LoadedModel
from mlops.params.expectations import Band, Directional, ExpectationsParams, Invariance, Minimum
from mlops.params_io import read_yaml

from conftest import FIXTURE_PARAMS

ROWS = pd.DataFrame(
    {
        "row_id": [1, 2, 3, 4, 5, 6],
        "x": [0.0, 2.0, 4.0, 6.0, 8.0, 10.0],
        "c": ["a", "b", "a", "b", "a", "b"],
    }
)


FEATURES = [
    {"name": "x", "kind": "numeric", "dtype": "FP64", "min": 0, "max": 10, "nullable": False},
    {"name": "c", "kind": "categorical", "dtype": "BYTES", "categories": ["a", "b"], "nullable": False},
]


def known(weights: list[list[float]], meta: dict) -> LoadedModel:
    """A linear model on [standardised x, c == "a", c == "b"] with the given weights (one row per output)."""
    pre = Preprocessor.fit(ROWS, ["x"], {"c": ["a", "b"]})
    net = MLP(pre.width, [], outputs=len(weights))
    with torch.no_grad():
        net.net[0].weight.copy_(torch.tensor(weights))
        net.net[0].bias.zero_()
    net.eval()
    return LoadedModel({"name": "known", "features": FEATURES, **meta}, net, pre)


@pytest.fixture(scope="module")
def model() -> LoadedModel:
    """Binary: logit = 3 * standardised x + (c == "a") - (c == "b"): rises with x, lower for "b"."""
    meta = {
        "decision_threshold": 0.5,
        "label": {"column": "y", "classes": ["neg", "pos"], "positive": "pos"},
    }
    return known([[3.0, 1.0, -1.0]], meta)


@pytest.fixture(scope="module")
def multiclass() -> LoadedModel:
    """Multiclass lo/mid/hi: logits -3x, 0 and 3x + (c == "a") - (c == "b") (x standardised): with x, "hi"
    rises and "lo" falls; "b" lowers "hi", which raises the other two."""
    meta = {"task": "multiclass-classification", "label": {"column": "y", "classes": ["lo", "mid", "hi"]}}
    return known([[-3.0, 0.0, 0.0], [0.0, 0.0, 0.0], [3.0, 1.0, -1.0]], meta)


@pytest.fixture(scope="module")
def regression() -> LoadedModel:
    """Regression: 100 + 10 * (3x + (c == "a") - (c == "b")) (x standardised), in the target's units: the
    head undoes the training scale (mean 100, std 10); "a" vs "b" is worth exactly 20."""
    meta = {"task": "regression", "label": {"column": "price", "scale": {"mean": 100.0, "std": 10.0}}}
    return known([[3.0, 1.0, -1.0]], meta)


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


# ------------------------------------------------------------ multiclass: the probability of a named class


def test_multiclass_directional_watches_the_target_class(multiclass):
    """The same change moves each class its own way: +3 on x raises "hi" and lowers "lo"; setting c to
    "b" lowers "hi" and so raises "lo"."""

    def share(target: str, direction: str, **change) -> float | None:
        e = Directional(direction=direction, min_share=1.0, target_class=target, **change)
        out = expectations.directional(multiclass, ROWS, e)
        assert out.description.startswith(f"probability of {target!r} goes {direction} when")
        return out.value

    assert share("hi", "up", feature="x", change=3) == 1.0
    assert share("lo", "down", feature="x", change=3) == 1.0
    assert share("lo", "up", feature="x", change=3) == 0.0
    assert share("hi", "down", feature="c", set="b") == 1.0
    assert share("lo", "up", feature="c", set="b") == 1.0


def test_multiclass_directional_needs_a_class_of_the_model(multiclass, model, regression):
    """No target_class, or one the model lacks, on a multiclass model; any target_class on a binary or
    regression model: params and model disagree, nothing to judge (ValueError naming the key)."""
    for bad in (None, "XL"):
        e = Directional(feature="x", change=1, direction="up", min_share=0.5, target_class=bad)
        with pytest.raises(ValueError, match=f"target_class {bad!r} is not a class of the multiclass model"):
            expectations.directional(multiclass, ROWS, e)
    e = Directional(feature="x", change=1, direction="up", min_share=0.5, target_class="pos")
    for other, kind in ((model, "binary"), (regression, "regression")):
        with pytest.raises(ValueError, match=f"target_class 'pos' given, but the model 'known' is {kind}"):
            expectations.directional(other, ROWS, e)


def test_multiclass_invariance_is_the_largest_change_over_every_class(multiclass):
    """Setting c to "a" moves every class's probability; the outcome is the largest move of any."""
    out = expectations.invariance(multiclass, ROWS, Invariance(feature="c", set="a", max_delta=0.01))
    changed = ROWS[ROWS["c"] != "a"].assign(c="a")
    moves = np.abs(multiclass.predict_proba(changed) - multiclass.predict_proba(ROWS[ROWS["c"] != "a"]))
    assert moves.shape == (3, 3) and (moves > 0).all()
    assert (out.rows, out.value, out.passed) == (3, float(moves.max()), False)
    assert out.description.startswith("every class probability moves at most 0.01")
    same = expectations.invariance(multiclass, ROWS, Invariance(feature="row_id", change=7, max_delta=0.0))
    assert (same.value, same.passed) == (0.0, True)


def test_multiclass_minimum_expects_a_class(multiclass):
    high = Minimum(where={"x": Band(min=7, max=10)}, expect="hi", min_share=1.0)
    out = expectations.minimum(multiclass, ROWS, high)
    assert (out.rows, out.value, out.passed) == (2, 1.0, True)
    low = Minimum(where={"x": Band(min=0, max=3)}, expect="lo", min_share=1.0)
    assert expectations.minimum(multiclass, ROWS, low).passed
    wrong = Minimum(where={"x": Band(min=7, max=10)}, expect="lo", min_share=0.5)
    assert expectations.minimum(multiclass, ROWS, wrong).value == 0.0
    band = Minimum(where={"x": Band(min=7, max=10)}, expect=Band(min=0, max=1), min_share=0.5)
    with pytest.raises(ValueError, match="does not fit the multiclass model 'known' .expected a label class"):
        expectations.minimum(multiclass, ROWS, band)


# ------------------------------------------------------------ regression: the predicted value, in its units


def test_regression_directional_watches_the_predicted_value(regression):
    up = expectations.directional(
        regression, ROWS, Directional(feature="x", change=3, direction="up", min_share=1.0)
    )
    assert (up.rows, up.value, up.passed) == (4, 1.0, True)
    assert up.description == "prediction goes up when x changed by +3"
    down = expectations.directional(
        regression, ROWS, Directional(feature="c", set="b", direction="down", min_share=1.0)
    )
    assert (down.rows, down.value, down.passed) == (3, 1.0, True)


def test_regression_invariance_is_in_the_targets_units(regression):
    """ "a" vs "b" is worth 20 in the target's units (not 2 in the standardised ones)."""
    loose = expectations.invariance(regression, ROWS, Invariance(feature="c", set="a", max_delta=20.01))
    assert loose.rows == 3 and loose.value == pytest.approx(20.0, abs=1e-3) and loose.passed
    assert loose.description.startswith("prediction moves at most 20.01 when c set to 'a'")
    tight = expectations.invariance(regression, ROWS, Invariance(feature="c", set="a", max_delta=19.99))
    assert not tight.passed
    same = expectations.invariance(regression, ROWS, Invariance(feature="row_id", set="z", max_delta=0.0))
    assert (same.value, same.passed) == (0.0, True)


def test_regression_minimum_expects_a_band_of_predicted_values(regression):
    """Rows with x in [7, 10] (8 and 10: standardised x > 0) are predicted above 100; none below."""
    predicted = regression.predict(ROWS[ROWS["x"] >= 7])
    assert (predicted > 100).all()
    inside = Minimum(where={"x": Band(min=7, max=10)}, expect=Band(min=100, max=1000), min_share=1.0)
    out = expectations.minimum(regression, ROWS, inside)
    assert (out.rows, out.value, out.passed) == (2, 1.0, True)
    assert out.description == "rows with x in [7, 10] are predicted in [100, 1000]"
    half = Band(min=float(predicted.min()), max=float(predicted.min()))  # only the lower one, on the edge
    edge = expectations.minimum(
        regression, ROWS, Minimum(where={"x": Band(min=7, max=10)}, expect=half, min_share=0.5)
    )
    assert (edge.value, edge.passed) == (0.5, True)
    below = Minimum(where={"x": Band(min=7, max=10)}, expect=Band(min=0, max=100), min_share=0.1)
    assert expectations.minimum(regression, ROWS, below).value == 0.0
    label = Minimum(where={"x": Band(min=7, max=10)}, expect="pos", min_share=0.5)
    with pytest.raises(ValueError, match="does not fit the regression model 'known' .expected a band"):
        expectations.minimum(regression, ROWS, label)


def test_evaluate_follows_the_models_task(multiclass, regression):
    """One declaration per task, every kind, all holding on the known models."""
    mc = ExpectationsParams(
        directional=[Directional(feature="x", change=1, direction="up", min_share=1.0, target_class="hi")],
        invariance=[Invariance(feature="row_id", set="other", max_delta=0.0)],
        minimum=[Minimum(where={"x": Band(min=7, max=10)}, expect="hi", min_share=1.0)],
    )
    rg = ExpectationsParams(
        directional=[Directional(feature="x", change=1, direction="up", min_share=1.0)],
        invariance=[Invariance(feature="row_id", set="other", max_delta=0.0)],
        minimum=[Minimum(where={"c": ["a"]}, expect=Band(min=0, max=1000), min_share=1.0)],
    )
    for declared, model in ((mc, multiclass), (rg, regression)):
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


def task_params(kind: str, section: dict | None = None) -> dict:
    """The fixture params edited for `kind` (tests/task_tables.py), with `expectations` replaced."""
    data = read_yaml(FIXTURE_PARAMS)
    if kind != "binary":
        task_tables.EDITS[kind](data)
    if section is not None:
        data["expectations"] = {"directional": [], "invariance": [], "minimum": [], **section}
    return data


def test_the_task_tables_declare_valid_expectations():
    """The multiclass (target_class) and regression (a band to expect) declarations load as written."""
    mc = parse_params(task_params("multiclass")).expectations
    assert mc.directional[0].target_class == "VF"
    rg = parse_params(task_params("regression")).expectations
    assert rg.minimum[0].expect == Band(min=0, max=2000) and rg.directional[0].target_class is None


@pytest.mark.parametrize(
    ("kind", "section", "message"),
    [
        (
            "multiclass",
            {"directional": [{"feature": "compounds", "change": 1, "direction": "up", "min_share": 0.9}]},
            "expectations.directional.0.target_class: missing required key (schema.task: multiclass names "
            "the class whose probability moves, one of ['VF', 'F', 'M', 'L'])",
        ),
        (
            "multiclass",
            {
                "directional": [
                    {
                        "feature": "hour",
                        "change": 1,
                        "direction": "up",
                        "min_share": 0.9,
                        "target_class": "XL",
                    }
                ]
            },
            "expectations.directional.0.target_class: 'XL' is not a label class (['VF', 'F', 'M', 'L'])",
        ),
        (
            "binary",
            {
                "directional": [
                    {
                        "feature": "tenure",
                        "change": 1,
                        "direction": "up",
                        "min_share": 0.9,
                        "target_class": "Yes",
                    }
                ]
            },
            "expectations.directional.0.target_class: only a multiclass task names a target class "
            "(schema.task: binary moves the probability of the positive class 'Yes'); remove the key",
        ),
        (
            "regression",
            {
                "directional": [
                    {
                        "feature": "carat",
                        "change": 1,
                        "direction": "up",
                        "min_share": 0.9,
                        "target_class": "x",
                    }
                ]
            },
            "expectations.directional.0.target_class: only a multiclass task names a target class "
            "(schema.task: regression moves the predicted value)",
        ),
        (
            "regression",
            {"minimum": [{"where": {"cut": ["Ideal"]}, "expect": "cheap", "min_share": 0.9}]},
            "expectations.minimum.0.expect: schema.task: regression expects a band {min, max} of predicted "
            "values, got 'cheap'",
        ),
        (
            "regression",
            {"minimum": [{"where": {"cut": ["Ideal"]}, "expect": {"min": 2000, "max": 0}, "min_share": 0.9}]},
            "expectations.minimum.0.expect: min 2000 is above max 0",
        ),
        (
            "multiclass",
            {"minimum": [{"where": {"day": ["Mon"]}, "expect": {"min": 0, "max": 1}, "min_share": 0.9}]},
            "expectations.minimum.0.expect: schema.task: multiclass expects a label class (one of "
            "['VF', 'F', 'M', 'L']), not a {min, max} band",
        ),
        (
            "multiclass",
            {"minimum": [{"where": {"day": ["Mon"]}, "expect": "XL", "min_share": 0.9}]},
            "expectations.minimum.0.expect: 'XL' is not a label class (['VF', 'F', 'M', 'L'])",
        ),
        (
            "binary",
            {"minimum": [{"where": {"tenure": {"min": 50, "max": 10}}, "expect": "No", "min_share": 0.9}]},
            "expectations.minimum.0.where.tenure: min 50 is above max 10",
        ),
        (
            "multiclass",
            {"invariance": [{"feature": "job_id", "change": 1, "max_delta": 0.0, "target_class": "VF"}]},
            "expectations.invariance.0.target_class: unknown key",
        ),
    ],
)
def test_expectations_fit_the_task(kind, section, message):
    """Each task's own syntax is checked against its schema; the error names the key path."""
    with pytest.raises(ConfigError, match=re.escape(message)):
        parse_params(task_params(kind, section))


def test_an_expectation_that_misfits_the_task_exits_2_naming_the_key(tmp_path, capsys):
    """Through the CLI's ConfigError path: exit 2, one line naming the file and the key."""
    path = tmp_path / "params.yaml"
    data = task_params(
        "multiclass", {"directional": [{"feature": "hour", "change": 1, "direction": "up", "min_share": 0.5}]}
    )
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    assert cli.main(["--params", str(path), "check-params"]) == 2
    err = capsys.readouterr().err
    assert f"{path}: expectations.directional.0.target_class: missing required key" in err, err
