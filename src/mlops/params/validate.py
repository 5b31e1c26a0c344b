"""params.validate: `validate`, how validation failures are reported."""

from __future__ import annotations

from mlops.params.base import PositiveInt, Section


class ValidateParams(Section):
    """`validate`: how failures are reported."""

    max_examples: PositiveInt
