"""params.drift: `drift`, the drift job's window, tests and thresholds (mlops.monitor.drift)."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from mlops.params.base import PositiveInt, Section


class StatTest(Section):
    """One Evidently drift test: its stattest name (`auto`: Evidently picks by dtype and sample size)
    and its threshold (a p-value for p-value tests, a distance for distance tests)."""

    method: Annotated[str, Field(min_length=1)]
    threshold: Annotated[float, Field(gt=0.0)]


class DriftParams(Section):
    """`drift`: `mlops drift` compares a window of logged predictions with the training reference."""

    window_hours: Annotated[float, Field(gt=0.0)] | None  # rows logged this long before now; None = all
    min_rows: PositiveInt  # fewer rows in the window: "insufficient data" (exit 0, no verdict)
    reference_rows: PositiveInt  # `mlops register` samples at most this many training rows
    seed: int  # that sample's seed
    numeric: StatTest  # the test for numeric schema columns (and a regression target's labelled rows)
    categorical: StatTest  # the test for categorical schema columns (and the class of labelled rows)
    # the test for each logged model output (mlops.task: binary `probability`, multiclass
    # `probability[<class>]` per class, regression `prediction`); None = not tested
    prediction: StatTest | None
    share_threshold: Annotated[float, Field(gt=0.0, le=1.0)]  # drift (exit 7) when this share drifts
    push_url: str | None  # Pushgateway URL (e.g. http://pushgateway:9091); None = no push
    trigger_retrain: bool  # call the retrain trigger (`retrain`) when drift is detected
