"""featurize on Spark (`featurize.engine: spark`, local[2]) against the pandas engine on the demo data:
the same split membership, fitted preprocessing state, Parquet schema and encoded rows (in the same
order, so training sees the same data); a Parquet dataset directory as input; clear errors."""

from __future__ import annotations

import json

import pandas as pd
import pyarrow.dataset as ds
import pytest

from mlops.errors import DataError
from mlops.stages import featurize

pytestmark = pytest.mark.slow


def _spark(params):
    p = params.featurize
    return p.model_copy(update={"engine": "spark"})


@pytest.fixture(scope="module")
def engines(pipeline, params, tmp_path_factory):
    """The pandas engine's outputs (the session pipeline) and the Spark engine's on the same raw table."""
    out = tmp_path_factory.mktemp("spark") / "processed"
    state = featurize.run(params.schema_, _spark(params), pipeline.raw, pipeline.validation, out)
    yield pipeline.processed, out, state
    from pyspark.sql import SparkSession

    active = SparkSession.getActiveSession()
    if active is not None:  # one JVM for the module's tests, stopped at its end
        active.stop()


def _table(path):
    return ds.dataset(path, format="parquet").to_table()


def test_same_split_membership_and_row_order(engines, params):
    pandas_dir, spark_dir, _ = engines
    for name in ("train", "valid", "test"):
        a, b = (pd.read_parquet(d / f"{name}.parquet") for d in (pandas_dir, spark_dir))
        assert len(a) == len(b) > 0, name
        assert a[params.schema_.id].tolist() == b[params.schema_.id].tolist(), f"{name}: ids or order differ"


def test_same_fitted_state_and_split_summary(engines):
    pandas_dir, spark_dir, state = engines
    a = json.loads((pandas_dir / "preprocess.json").read_text())
    b = json.loads((spark_dir / "preprocess.json").read_text())
    assert b == state
    assert a["preprocessing"]["categorical"] == b["preprocessing"]["categorical"]
    assert [n["name"] for n in a["preprocessing"]["numeric"]] == [
        n["name"] for n in b["preprocessing"]["numeric"]
    ]
    for x, y in zip(a["preprocessing"]["numeric"], b["preprocessing"]["numeric"], strict=True):
        for key in ("median", "mean", "std"):
            assert y[key] == pytest.approx(x[key], rel=1e-12, abs=1e-12), f"{x['name']}.{key}"
    assert a["feature_names"] == b["feature_names"] and a["features"] == b["features"]
    for name in ("train", "valid", "test"):
        assert a["splits"][name]["rows"] == b["splits"][name]["rows"]
        assert b["splits"][name]["positive_rate"] == pytest.approx(
            a["splits"][name]["positive_rate"], abs=1e-15
        )
    assert a["data_md5"] == b["data_md5"]


def test_same_parquet_schema_and_encoded_values(engines):
    pandas_dir, spark_dir, _ = engines
    for name in ("train", "valid", "test"):
        a, b = (_table(d / f"{name}.parquet") for d in (pandas_dir, spark_dir))
        assert [(f.name, f.type) for f in a.schema] == [(f.name, f.type) for f in b.schema], name
        fa, fb = a.to_pandas(), b.to_pandas()
        pd.testing.assert_frame_equal(fa, fb, check_exact=False, rtol=1e-6, atol=1e-6)


def test_a_parquet_dataset_directory_is_read_whole(engines, pipeline, params, tmp_path):
    """The raw table as 3 Parquet files (a data lake's layout): the same splits and state as one file.
    Spark orders a directory's files its own way, so rows are compared as sets here."""
    from mlops import featurize_spark

    _, spark_dir, state = engines
    raw = pd.read_parquet(pipeline.raw)
    lake = tmp_path / "raw"
    lake.mkdir()
    for i, start in enumerate(range(0, len(raw), 2500)):
        raw.iloc[start : start + 2500].to_parquet(lake / f"part-{i:03d}.parquet", index=False)
    pre, balance = featurize_spark.run(
        params.schema_, _spark(params), lake, tmp_path / "out", featurize.encode
    )
    assert {k: v["rows"] for k, v in balance.items()} == {k: v["rows"] for k, v in state["splits"].items()}
    for x, y in zip(state["preprocessing"]["numeric"], pre.to_dict()["numeric"], strict=True):
        assert y["name"] == x["name"]
        assert [y[k] for k in ("median", "mean", "std")] == pytest.approx(
            [x[k] for k in ("median", "mean", "std")], rel=1e-12
        ), x["name"]
    for name in ("train", "valid", "test"):
        ids = [
            set(pd.read_parquet(d / f"{name}.parquet")[params.schema_.id])
            for d in (spark_dir, tmp_path / "out")
        ]
        assert ids[0] == ids[1], name


def test_missing_column_is_a_data_error_naming_it(pipeline, params, tmp_path):
    from mlops import featurize_spark

    raw = pd.read_parquet(pipeline.raw).drop(columns=["tenure"])
    raw.to_parquet(tmp_path / "raw.parquet", index=False)
    with pytest.raises(DataError, match="missing column 'tenure'"):
        featurize_spark.run(
            params.schema_, _spark(params), tmp_path / "raw.parquet", tmp_path / "out", featurize.encode
        )
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
