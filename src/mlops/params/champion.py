"""params.champion: `champion`, the paired-bootstrap comparison with an environment's record (mlops.compare)."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field, model_validator

from mlops.params.base import Fraction, NonNegative, Section
from mlops.params.gate import _known_metrics


class BootstrapParams(Section):
    """The seeded paired bootstrap behind the champion comparison."""

    samples: Annotated[int, Field(ge=100)]
    confidence: Fraction
    seed: int


class ChampionParams(Section):
    """`champion`: the candidate vs an environment's promoted model, both scored on the same rows, at
    review time (`mlops report`, vs production) and at promotion time (`mlops promote`, vs the target
    env; exit 6). Not read by any DVC stage. metric -> largest regression tolerated (metric units)."""

    max_regression: dict[str, NonNegative]
    bootstrap: BootstrapParams

    @model_validator(mode="after")
    def _metric_names(self) -> ChampionParams:
        _known_metrics("champion.max_regression", self.max_regression)
        return self
