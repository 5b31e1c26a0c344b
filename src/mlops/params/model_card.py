"""params.model_card: `model_card`, the intended use and limits shown in the review report."""

from __future__ import annotations

from typing import Annotated

from pydantic import Field

from mlops.params.base import Section


class ModelCardParams(Section):
    """`model_card`: what the model is for and where it must not be used (the review report's model card).
    Text about the team's own task: the template's demo text is only true of the demo table."""

    intended_use: Annotated[str, Field(min_length=1)]
    limits: Annotated[str, Field(min_length=1)]
