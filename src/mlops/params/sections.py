"""params.sections: load only the params.yaml sections one command reads, pydantic or msgspec.

A stage declares its sections (`SECTIONS`: name -> class) and `mlops.cli` validates exactly those. Most
sections are pydantic models (mlops.params.base); a few are msgspec Structs (mlops.params.structs:
`ingest`, `serve`) so the commands that read only them start without importing pydantic. This module
imports pydantic only when a requested section is a pydantic model.
"""

from __future__ import annotations

import os
from typing import Any

import msgspec

from mlops.errors import ConfigError
from mlops.params_io import read_yaml, sections


class Sections:
    """The validated sections one command reads: `params.train`, `params.schema`, ..."""

    def __init__(self, values: dict[str, Any]):
        self._values = values
        for name, value in values.items():
            setattr(self, name, value)

    def section(self, name: str) -> dict[str, Any]:
        """One section as plain data (MLflow params, params hashes)."""
        value = self._values[name]
        if isinstance(value, msgspec.Struct):
            return msgspec.to_builtins(value)
        return value.model_dump(mode="json")


def _validate(name: str, cls: type, data: Any) -> tuple[Any, list[str]]:
    """(the section, []) or (None, the problems, each naming its key)."""
    if issubclass(cls, msgspec.Struct):
        from mlops.params import structs

        module = __import__(cls.__module__, fromlist=["convert"])
        convert = getattr(module, "convert", None)
        try:
            return (convert(data, name) if convert else structs.convert(data, cls, name)), []
        except ValueError as e:
            return None, [str(e)]
    from pydantic import ValidationError

    from mlops.params.base import describe

    try:
        return cls.model_validate(data), []
    except ValidationError as e:
        return None, [describe(err, name) for err in e.errors()]


def load_sections(path: str | os.PathLike[str], classes: dict[str, type]) -> Sections:
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
    values: dict[str, Any] = {}
    problems: list[str] = []
    for name, cls in classes.items():
        if name not in data:
            problems.append(f"{name}: missing required section")
            continue
        value, found = _validate(name, cls, data[name])
        if found:
            problems += found
        else:
            values[name] = value
    if problems:
        raise ConfigError(f"{source}: {'; '.join(problems)}")
    return Sections(values)
