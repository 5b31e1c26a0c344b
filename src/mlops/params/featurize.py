"""params.featurize: `featurize`, the splits and the preprocessing engine (pandas or Spark)."""

from __future__ import annotations

from typing import Literal

from mlops.params.base import Fraction, PositiveInt, Section


class SparkParams(Section):
    """`featurize.spark`: the Spark session of `featurize.engine: spark` (mlops.featurize_spark)."""

    master: str  # local[N] on one machine, or a cluster URL (spark://..., yarn, k8s://...)
    driver_memory: str
    shuffle_partitions: PositiveInt
    conf: dict[str, str]  # any other spark.* setting


class FeaturizeParams(Section):
    """`featurize`: the id-hash split and the engine that computes it."""

    seed: int
    test_size: Fraction
    valid_size: Fraction
    engine: Literal["pandas", "spark"]
    spark: SparkParams
