"""params.base: the base of every pydantic params section, and loading only the sections a command reads.

Every section is strict: an unknown, missing or mistyped key is an error (`ConfigError`, exit 2) whose
message names the file, the key path (e.g. `params.yaml: train.epochs`) and what was expected. No key has
a silent default: every key a stage reads is written in params.yaml, so the file is the whole truth about
a run.
"""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field

from mlops.params.sections import Sections as Sections  # re-exported: the stages import it from here
from mlops.params.sections import load_sections as load_sections


class Section(BaseModel):
    """Base of every params section: strict types, unknown keys rejected, immutable."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True, use_attribute_docstrings=True)


PositiveInt = Annotated[int, Field(gt=0)]
Fraction = Annotated[float, Field(gt=0.0, lt=1.0)]
NonNegative = Annotated[float, Field(ge=0.0)]


def describe(error: dict[str, Any], prefix: str = "") -> str:
    """One pydantic error as `key.path: what is wrong (got type value)`."""
    loc = ".".join(str(p) for p in (*((prefix,) if prefix else ()), *error["loc"])) or "(top level)"
    kind = error["type"]
    if kind == "extra_forbidden":
        return f"{loc}: unknown key"
    if kind == "missing":
        return f"{loc}: missing required key"
    if kind == "value_error":
        # our own validators already name the key path in the message
        return str(error["ctx"]["error"]) if "ctx" in error else error["msg"]
    got = error.get("input")
    return f"{loc}: {error['msg'].replace('Input should', 'expected to')} (got {type(got).__name__} {got!r})"
