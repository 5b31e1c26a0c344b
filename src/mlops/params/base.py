"""params.base: the base of every pydantic params section, and loading only the sections a command reads.

Every section is strict: an unknown, missing or mistyped key is an error (`ConfigError`, exit 2) whose
message names the file, the key path (e.g. `params.yaml: train.epochs`) and what was expected. No key has
a silent default: every key a stage reads is written in params.yaml, so the file is the whole truth about
a run.
"""

from __future__ import annotations

import os
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from mlops.errors import ConfigError
from mlops.params_io import read_yaml, sections


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


class Sections:
    """The validated sections one command reads: `params.train`, `params.schema`, ..."""

    def __init__(self, values: dict[str, Section]):
        self._values = values
        for name, value in values.items():
            setattr(self, name, value)

    def section(self, name: str) -> dict[str, Any]:
        """One section as plain data (MLflow params, params hashes)."""
        return self._values[name].model_dump(mode="json")


def load_sections(path: str | os.PathLike[str], classes: dict[str, type[Section]]) -> Sections:
    """Read params.yaml (YAML 1.2, as DVC reads it) and validate only the named sections.

    Args:
        path: the params file.
        classes: section name -> its class (a stage's `SECTIONS`).

    Raises:
        ConfigError: the file is unreadable, or a section is missing or has an unknown, missing or
            mistyped key (every problem named, with the file).
    """
    source = str(path)
    data = sections(read_yaml(path), source)
    values: dict[str, Section] = {}
    problems: list[str] = []
    for name, cls in classes.items():
        if name not in data:
            problems.append(f"{name}: missing required section")
            continue
        try:
            values[name] = cls.model_validate(data[name])
        except ValidationError as e:
            problems += [describe(err, name) for err in e.errors()]
    if problems:
        raise ConfigError(f"{source}: {'; '.join(problems)}")
    return Sections(values)
