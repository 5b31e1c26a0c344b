"""Behavioural model tests for churn (directional, invariance, minimum functionality) and load safety.

They run against the model the session pipeline trained on the demo data.
"""

from __future__ import annotations

import shutil

import pandas as pd
import pytest

from mlops import model as model_lib
from mlops.errors import ChecksumMismatch, ModelNotReady


@pytest.fixture(scope="module")
def model(pipeline):
    return model_lib.load(pipeline.models)


@pytest.fixture(scope="module")
def customers(pipeline) -> pd.DataFrame:
    return pd.read_parquet(pipeline.raw).sample(300, random_state=0).reset_index(drop=True)


def with_(frame: pd.DataFrame, **values) -> pd.DataFrame:
    out = frame.copy()
    for k, v in values.items():
        out[k] = v
    return out


def test_directional_longer_contract_lowers_churn(model, customers):
    """Directional: moving customers from month-to-month to a two-year contract lowers their churn risk."""
    monthly = model.predict_proba(with_(customers, contract="Month-to-month"))
    two_year = model.predict_proba(with_(customers, contract="Two year"))
    assert (two_year < monthly).mean() > 0.95
    assert two_year.mean() < monthly.mean() - 0.1


def test_directional_longer_tenure_lowers_churn(model, customers):
    """Directional: the same customers with 60 months of tenure churn less than with 2 months."""
    fixed = with_(customers, total_charges=customers["monthly_charges"] * 24)
    short = model.predict_proba(with_(fixed, tenure=2))
    long = model.predict_proba(with_(fixed, tenure=60))
    assert (long < short).mean() > 0.9


def test_invariance_gender_barely_moves_the_score(model, customers):
    """Invariance: flipping the `female` flag moves scores by a few points on average, never by much."""
    a = model.predict_proba(with_(customers, female=0))
    b = model.predict_proba(with_(customers, female=1))
    assert abs(a - b).mean() < 0.03 and abs(a - b).max() < 0.15


def test_invariance_to_column_order_and_extra_columns(model, customers):
    """Invariance: column order and unrelated extra columns do not change predictions."""
    shuffled = customers[list(reversed(customers.columns))].assign(note="x")
    assert (model.predict_proba(shuffled) == model.predict_proba(customers)).all()


def test_minimum_functionality_obvious_cases(model, customers):
    """Minimum functionality: a new fiber, month-to-month, e-check customer is riskier than a loyal one."""
    base = customers.iloc[[0]]
    risky = with_(
        base,
        contract="Month-to-month",
        tenure=1,
        internet_service="Fiber optic",
        payment_method="Electronic check",
        monthly_charges=95.0,
        total_charges=95.0,
    )
    loyal = with_(
        base,
        contract="Two year",
        tenure=70,
        internet_service="DSL",
        payment_method="Credit card (automatic)",
        monthly_charges=50.0,
        total_charges=3500.0,
    )
    p_risky, p_loyal = model.predict_proba(risky)[0], model.predict_proba(loyal)[0]
    assert p_risky > 0.5 > p_loyal
    assert model.predict_label([p_risky, p_loyal]) == ["Yes", "No"]
    # the positive class listed first in model.json's classes maps the same way
    first = {**model.metadata, "label": {**model.metadata["label"], "classes": ["Yes", "No"]}}
    assert type(model)(first, model.net, model.preprocessor).predict_label([p_risky, p_loyal]) == [
        "Yes",
        "No",
    ]


def test_tampered_weights_are_refused(pipeline, tmp_path):
    shutil.copytree(pipeline.models, tmp_path / "m")
    weights = tmp_path / "m/model.safetensors"
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(ChecksumMismatch, match="does not match model.json"):
        model_lib.load(tmp_path / "m")


def test_missing_model_is_not_ready(tmp_path):
    with pytest.raises(ModelNotReady, match="model metadata not found"):
        model_lib.load(tmp_path)
