"""featurize and the data it hands to training: split integrity and stability, label balance, train-only
fitting, nullable categoricals."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from mlops import splits as split_lib
from mlops.errors import DataError
from mlops.features import MISSING, Preprocessor
from mlops.stages import featurize


@pytest.fixture(scope="module")
def splits(pipeline) -> dict[str, pd.DataFrame]:
    return {s: pd.read_parquet(pipeline.processed / f"{s}.parquet") for s in featurize.SPLITS}


def test_no_id_in_two_splits_and_all_rows_used(splits, pipeline):
    ids = [set(f["customer_id"]) for f in splits.values()]
    assert not (ids[0] & ids[1]) and not (ids[0] & ids[2]) and not (ids[1] & ids[2])
    assert len(ids[0] | ids[1] | ids[2]) == len(pd.read_parquet(pipeline.raw)) == 7043


def sigma3(rate: float, n: int) -> float:
    """Three binomial standard deviations: the hash split matches fractions and balance up to this."""
    return 3 * (rate * (1 - rate) / n) ** 0.5


def test_split_sizes_follow_params(splits, params):
    total = sum(len(f) for f in splits.values())
    for name, size in (("test", params.featurize.test_size), ("valid", params.featurize.valid_size)):
        assert abs(len(splits[name]) / total - size) < sigma3(size, total), name


def test_label_balance_kept_by_the_split_approximately(splits, pipeline):
    """Stratification is approximate: the hash ignores the label, so balance holds up to sampling noise."""
    overall = (pd.read_parquet(pipeline.raw)["churn"] == "Yes").mean()
    for name, frame in splits.items():
        assert abs(frame["label"].mean() - overall) < sigma3(overall, len(frame)), name


def test_appending_rows_moves_no_existing_row(pipeline, params):
    """A re-ingest that grows (or reorders) the table keeps every existing id in its split."""
    raw = pd.read_parquet(pipeline.raw)
    before = featurize.split(raw, "customer_id", params.featurize)
    new = raw.sample(n=2000, random_state=1).assign(customer_id=lambda f: [f"new-{i}" for i in range(len(f))])
    grown = pd.concat([new, raw.iloc[::-1]], ignore_index=True)  # new rows first, old ones reversed
    after = featurize.split(grown, "customer_id", params.featurize)
    for name in featurize.SPLITS:
        old_ids = set(before[name]["customer_id"])
        kept = set(after[name]["customer_id"]) - {i for i in new["customer_id"]}
        assert kept == old_ids, name
    # and the split of an id depends on nothing else than the id, the seed and the fractions
    assert (
        split_lib.assign([17, "17", 17.0], 42, 0.2, 0.1).tolist()
        == [split_lib.assign(["17"], 42, 0.2, 0.1)[0]] * 3
    )


def test_the_seed_salts_the_hash(pipeline, params):
    ids = pd.read_parquet(pipeline.raw)["customer_id"]
    a, b = (split_lib.assign(ids, seed, 0.2, 0.1) for seed in (1, 2))
    assert (a != b).mean() > 0.2
    too_big = params.featurize.model_copy(update={"seed": 0, "test_size": 0.6, "valid_size": 0.5})
    with pytest.raises(DataError, match="test_size \\+ valid_size must be below 1"):
        featurize.split(pd.DataFrame({"id": [1]}), "id", too_big)


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


def test_positive_class_first_or_last_gives_the_same_labels(pipeline, params, tmp_path):
    """`schema.label.positive` decides 1, not the order of `schema.label.classes`."""
    raw = pd.read_parquet(pipeline.raw)
    swapped = params.schema_.model_copy(
        update={"label": params.schema_.label.model_copy(update={"classes": ["Yes", "No"]})}
    )
    state = json.loads((pipeline.processed / "preprocess.json").read_text())
    pre = Preprocessor.from_dict(state["preprocessing"])
    for schema in (params.schema_, swapped):
        encoded = featurize.encode(raw.head(200), pre, schema)
        assert (encoded["label"] == (raw.head(200)["churn"] == "Yes")).all()


# ---------------------------------------------------------------- nullable categoricals
def test_nullable_categorical_gets_a_missing_slot():
    train = {"x": [1.0, 2.0, 3.0], "c": ["a", None, "b"]}
    pre = Preprocessor.fit(train, ["x"], {"c": ["a", "b"]}, nullable=["c"])
    assert pre.feature_names == ["x", "c=a", "c=b", f"c={MISSING}"]
    m = pre.transform({"x": [1.0, 2.0, 3.0, 4.0], "c": ["b", None, float("nan"), pd.NA]})
    assert m[:, 1:].tolist() == [[0, 1, 0], [0, 0, 1], [0, 0, 1], [0, 0, 1]]
    again = Preprocessor.from_dict(json.loads(json.dumps(pre.to_dict())))
    assert again == pre and again.nullable == {"c"} and again.slots("c") == {"a": 0, "b": 1, None: 2}
    strict = Preprocessor.fit(train, ["x"], {"c": ["a", "b"]})
    with pytest.raises(DataError, match="feature 'c': null not allowed"):
        strict.transform({"x": [1.0], "c": [None]})
    # a model.json written before nullable categoricals existed still loads (no key: not nullable)
    old = {"numeric": [], "categorical": [{"name": "c", "categories": ["a", "b"]}]}
    assert Preprocessor.from_dict(old).nullable == frozenset()


def test_nullable_categorical_runs_through_featurize(pipeline, params, tmp_path):
    """validate accepts nulls in a nullable categorical column, and featurize encodes them."""
    from mlops.stages import validate

    raw = pd.read_parquet(pipeline.raw)
    raw.loc[raw.index[::5], "contract"] = None
    data = tmp_path / "raw.parquet"
    raw.to_parquet(data)
    cats = dict(params.schema_.categorical)
    cats["contract"] = cats["contract"].model_copy(update={"nullable": True})
    schema = params.schema_.model_copy(update={"categorical": cats})
    validate.run(schema, 5, data, tmp_path / "validation.json")
    state = featurize.run(schema, params.featurize, data, tmp_path / "validation.json", tmp_path / "out")
    assert f"contract={MISSING}" in state["feature_names"]
    spec = next(f for f in state["features"] if f["name"] == "contract")
    assert spec["nullable"] is True
    train = pd.read_parquet(tmp_path / "out/train.parquet")
    block = [c for c in train.columns if c.startswith("contract=")]
    assert (train[block].sum(axis=1) == 1).all() and train[f"contract={MISSING}"].sum() > 0
