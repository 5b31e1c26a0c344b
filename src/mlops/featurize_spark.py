"""featurize_spark: the featurize stage on Apache Spark (`featurize.engine: spark`).

The same outputs as the pandas path, computed by Spark so the table never has to fit one process:

- split membership: the same id hash (`mlops.splits.unit_hash`, run by a pandas UDF on the executors)
  and the same thresholds, so every row lands in the same split;
- fitted state: per numeric column on the training rows, Spark's exact `median` (nulls ignored),
  `avg` and `stddev_pop` (numpy's `std` with ddof 0), std 0 replaced by 1 as in `Preprocessor.fit`:
  equal to the pandas state up to float summation order; the categorical state is the schema's;
- encoded splits: `Preprocessor.transform` applied per Arrow batch (`mapInPandas`) by the same
  `encode` function, written as Parquet datasets (`data/processed/<split>.parquet/part-*.parquet`)
  with the pandas path's column names and types, in the input table's row order (so training sees the
  rows in the same order and trains the same model).

`featurize.spark.master` is `local[N]` on one machine (tests use `local[2]`) or a cluster URL
(`spark://...`, `yarn`, `k8s://...`); local sessions bind the driver to 127.0.0.1 and run without the
web UI. PySpark needs Java 17+.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pandas as pd

from mlops import splits
from mlops.errors import ConfigError, DataError
from mlops.features import NumericState, Preprocessor
from mlops.labels import LABEL
from mlops.params.featurize import FeaturizeParams, SparkParams
from mlops.params.schema import SchemaParams

log = logging.getLogger(__name__)

_ROW, _SPLIT = "__mlops_row", "__mlops_split"


def session(params: SparkParams) -> Any:
    """A SparkSession for `params.master` (local sessions stay on loopback, no UI)."""
    try:
        from pyspark.sql import SparkSession
    except ImportError as e:
        raise ConfigError(
            "featurize.engine: spark needs PySpark (pip install '.[spark]') and Java 17+"
        ) from e
    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    builder = (
        SparkSession.builder.master(params.master)
        .appName("mlops-featurize")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.driver.memory", params.driver_memory)
        .config("spark.sql.shuffle.partitions", str(params.shuffle_partitions))
        .config("spark.sql.execution.arrow.pyspark.enabled", "true")
        .config("spark.sql.session.timeZone", "UTC")
    )
    if params.master.startswith("local"):
        os.environ.setdefault("SPARK_LOCAL_IP", "127.0.0.1")
        builder = builder.config("spark.driver.host", "127.0.0.1").config(
            "spark.driver.bindAddress", "127.0.0.1"
        )
    for key, value in params.conf.items():
        builder = builder.config(key, value)
    try:
        return builder.getOrCreate()
    except Exception as e:  # noqa: BLE001 - py4j/JVM start-up failures come in many types
        raise ConfigError(
            f"featurize.spark.master: cannot start Spark on '{params.master}' ({type(e).__name__}: {e})"
        ) from e


def fit(
    train: Any, numeric: list[str], categorical: dict[str, list[str]], nullable: list[str]
) -> Preprocessor:
    """The Preprocessor fitted on the training rows of a Spark DataFrame (one aggregation pass)."""
    from pyspark.sql import functions as F

    aggs = []
    for name in numeric:
        col = F.col(name).cast("double")
        aggs += [
            F.count(col).alias(f"{name}__n"),
            F.median(col).alias(f"{name}__median"),
            F.avg(col).alias(f"{name}__mean"),
            F.stddev_pop(col).alias(f"{name}__std"),
        ]
    row = train.agg(*aggs).collect()[0].asDict() if aggs else {}
    state = {}
    for name in numeric:
        if not row[f"{name}__n"]:
            raise DataError(f"column '{name}': no non-null training values to fit on")
        std = float(row[f"{name}__std"])
        state[name] = NumericState(
            median=float(row[f"{name}__median"]),
            mean=float(row[f"{name}__mean"]),
            std=std if std > 0 else 1.0,
        )
    return Preprocessor(
        numeric=state, categorical={k: list(v) for k, v in categorical.items()}, nullable=frozenset(nullable)
    )


def _write(frame: Any, target: Path) -> None:
    """Write a Spark DataFrame as a Parquet dataset at `target`, replacing what was there only once the
    new dataset is complete (written next to it, then renamed)."""
    tmp = target.with_name(f".{target.name}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    frame.write.mode("overwrite").parquet(str(tmp))
    if target.is_dir():
        shutil.rmtree(target)
    elif target.exists():
        target.unlink()
    os.replace(tmp, target)


def run(
    schema: SchemaParams,
    params: FeaturizeParams,
    data: Path,
    out_dir: Path,
    encode: Callable[[pd.DataFrame, Preprocessor, SchemaParams], pd.DataFrame],
) -> tuple[Preprocessor, dict[str, dict[str, Any]]]:
    """Split, fit on train and encode with Spark; write `<split>.parquet` datasets under out_dir.

    Args:
        schema: the `schema` params section.
        params: the `featurize` params section (`spark` settings included).
        data: the validated raw table (a Parquet file or dataset directory).
        out_dir: data/processed.
        encode: featurize's encoder (raw rows -> id, label, features), applied per Arrow batch.

    Returns:
        The fitted Preprocessor and, per split, its rows and positive rate.
    """
    from pyspark.sql import functions as F
    from pyspark.sql import types as T

    if not 0.0 < params.test_size + params.valid_size < 1.0:
        raise DataError("featurize: test_size + valid_size must be below 1")
    spark = session(params.spark)
    columns = [schema.id, schema.label.column, *schema.features]
    try:
        frame = spark.read.parquet(str(data))
    except Exception as e:  # noqa: BLE001 - AnalysisException and JVM errors
        raise DataError(f"{data}: not a readable Parquet table ({type(e).__name__}: {e})") from e
    missing = [c for c in columns if c not in frame.columns]
    if missing:
        raise DataError(f"{data}: missing column '{missing[0]}'")
    seed, test, both = params.seed, params.test_size, params.test_size + params.valid_size

    @F.pandas_udf("double")
    def unit(ids: pd.Series) -> pd.Series:
        return pd.Series(splits.unit_hash(ids, seed))

    u = unit(F.col(schema.id))
    frame = (
        frame.select(*columns)
        .withColumn(_ROW, F.monotonically_increasing_id())  # the table's row order, kept in the output
        .withColumn(_SPLIT, F.when(u < test, "test").when(u < both, "valid").otherwise("train"))
        .cache()
    )
    counts = {r[_SPLIT]: r["count"] for r in frame.groupBy(_SPLIT).count().collect()}
    empty = [name for name in splits.NAMES if not counts.get(name)]
    if empty:
        raise DataError(
            f"featurize: the {empty[0]} split is empty ({sum(counts.values())} rows); more rows are needed"
        )
    categorical = {k: v.categories for k, v in schema.categorical.items()}
    nullable = [k for k, v in schema.categorical.items() if v.nullable]
    pre = fit(frame.filter(F.col(_SPLIT) == "train"), list(schema.numeric), categorical, nullable)

    id_type = frame.schema[schema.id].dataType
    out_schema = T.StructType(
        [
            T.StructField(schema.id, id_type),
            T.StructField(LABEL, T.ByteType()),  # labels.to_binary: int8, as the pandas path writes
            *(T.StructField(name, T.FloatType()) for name in pre.feature_names),
            T.StructField(_ROW, T.LongType()),
            T.StructField(_SPLIT, T.StringType()),
        ]
    )

    def encode_batches(batches: Iterator[pd.DataFrame]) -> Iterator[pd.DataFrame]:
        for batch in batches:
            out = encode(batch, pre, schema)
            out[_ROW] = batch[_ROW].to_numpy()
            out[_SPLIT] = batch[_SPLIT].to_numpy()
            yield out

    # one encoding pass over every row (Python workers run once), cached for the summary and the writes
    encoded = frame.mapInPandas(encode_batches, out_schema).cache()
    try:
        stats = encoded.groupBy(_SPLIT).agg(F.count(F.lit(1)).alias("rows"), F.avg(LABEL).alias("rate"))
        summary = {r[_SPLIT]: r for r in stats.collect()}
        balance: dict[str, dict[str, Any]] = {}
        for name in splits.NAMES:
            part = encoded.filter(F.col(_SPLIT) == name).drop(_SPLIT).orderBy(_ROW).drop(_ROW)
            _write(part, out_dir / f"{name}.parquet")
            balance[name] = {
                "rows": int(summary[name]["rows"]),
                "positive_rate": float(summary[name]["rate"]),
            }
    except DataError:
        raise
    except Exception as e:  # noqa: BLE001 - a DataError raised in a Python worker arrives wrapped
        for line in str(e).splitlines():
            if "DataError:" in line:
                raise DataError(line.split("DataError:", 1)[1].strip()) from e
        raise
    finally:
        encoded.unpersist()
        frame.unpersist()
    return pre, balance
