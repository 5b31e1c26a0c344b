"""featurize and the data it hands to training: split integrity, label balance, train-only fitting."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from mlops import featurize
from mlops.errors import DataError
from mlops.features import Preprocessor


@pytest.fixture(scope="module")
def splits(pipeline) -> dict[str, pd.DataFrame]:
    return {s: pd.read_parquet(pipeline.processed / f"{s}.parquet") for s in featurize.SPLITS}


def test_no_id_in_two_splits_and_all_rows_used(splits, pipeline):
    ids = [set(f["customer_id"]) for f in splits.values()]
    assert not (ids[0] & ids[1]) and not (ids[0] & ids[2]) and not (ids[1] & ids[2])
    assert len(ids[0] | ids[1] | ids[2]) == len(pd.read_parquet(pipeline.raw)) == 7043


def test_split_sizes_follow_params(splits, params):
    total = sum(len(f) for f in splits.values())
    assert abs(len(splits["test"]) / total - params.featurize.test_size) < 0.002
    assert abs(len(splits["valid"]) / total - params.featurize.valid_size) < 0.002


def test_label_balance_kept_by_the_split(splits, pipeline):
    overall = (pd.read_parquet(pipeline.raw)["churn"] == "Yes").mean()
    for name, frame in splits.items():
        assert abs(frame["label"].mean() - overall) < 0.005, name


def test_preprocessing_fitted_on_train_only(splits, pipeline):
    state = json.loads((pipeline.processed / "preprocess.json").read_text())
    raw = pd.read_parquet(pipeline.raw).set_index("customer_id")
    train_raw = raw.loc[splits["train"]["customer_id"]]
    tenure = next(c for c in state["preprocessing"]["numeric"] if c["name"] == "tenure")
    assert tenure["mean"] == pytest.approx(train_raw["tenure"].mean())
    assert tenure["mean"] != pytest.approx(raw["tenure"].mean(), abs=1e-9)
    # standardised on train: mean 0, std 1 there
    assert splits["train"]["tenure"].mean() == pytest.approx(0.0, abs=1e-5)
    assert splits["train"]["tenure"].std(ddof=0) == pytest.approx(1.0, abs=1e-4)


def test_blank_total_charges_imputed_with_train_median(splits, pipeline):
    state = json.loads((pipeline.processed / "preprocess.json").read_text())
    st = next(c for c in state["preprocessing"]["numeric"] if c["name"] == "total_charges")
    raw = pd.read_parquet(pipeline.raw).set_index("customer_id")
    blank_ids = set(raw.index[raw["total_charges"].isna()])
    for frame in splits.values():
        rows = frame[frame["customer_id"].isin(blank_ids)]
        assert np.allclose(rows["total_charges"], (st["median"] - st["mean"]) / st["std"])
        assert frame.drop(columns=["customer_id"]).notna().all().all()


def test_one_hot_layout_and_dtypes(splits, pipeline, params):
    frame = splits["train"]
    onehot = [c for c in frame.columns if c.startswith("contract=")]
    assert onehot == [f"contract={c}" for c in params.schema_.categorical["contract"].categories]
    assert (frame[onehot].sum(axis=1) == 1).all()
    assert all(frame[c].dtype == np.float32 for c in frame.columns if c not in ("customer_id", "label"))


def test_split_is_deterministic(pipeline, params, tmp_path):
    featurize.run(params.schema_, params.featurize, pipeline.raw, pipeline.validation, tmp_path)
    for name in featurize.SPLITS:
        assert (tmp_path / f"{name}.parquet").read_bytes() == (
            pipeline.processed / f"{name}.parquet"
        ).read_bytes()


def test_refuses_a_table_that_did_not_pass_validation(pipeline, params, tmp_path):
    report = json.loads(pipeline.validation.read_text())
    failed = tmp_path / "validation.json"
    failed.write_text(json.dumps({**report, "passed": False}))
    with pytest.raises(DataError, match="failed validation"):
        featurize.run(params.schema_, params.featurize, pipeline.raw, failed, tmp_path / "out")
    stale = tmp_path / "stale.json"
    stale.write_text(json.dumps({**report, "data_md5": "0" * 32}))
    with pytest.raises(DataError, match="reports on another table"):
        featurize.run(params.schema_, params.featurize, pipeline.raw, stale, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_transform_errors_name_the_feature(pipeline):
    state = json.loads((pipeline.processed / "preprocess.json").read_text())
    pre = Preprocessor.from_dict(state["preprocessing"])
    row = pd.read_parquet(pipeline.raw).head(2)
    with pytest.raises(DataError, match="feature 'contract': unknown category 'Lifetime'"):
        pre.transform({**row, "contract": ["Lifetime", "One year"]})
    with pytest.raises(DataError, match="missing feature 'tenure'"):
        pre.transform(row.drop(columns=["tenure"]))
    with pytest.raises(DataError, match="feature 'tenure': expected numbers"):
        pre.transform({**row, "tenure": ["ten", "two"]})
    with pytest.raises(DataError, match="feature 'partner': 1 values, expected 2"):
        pre.transform({**row, "partner": [1]})
