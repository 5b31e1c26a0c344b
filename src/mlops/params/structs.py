"""params.structs: msgspec sections, for the commands that must start without pydantic.

`mlops serve` (the server's start-up) and `mlops fingerprint` (run by every `dvc repro`) read one
section each; importing pydantic and building its classes costs them more than their work does
(benchmarks/serving/startup.md, benchmarks/pipeline/). Their sections are msgspec Structs, and
`describe` turns msgspec's errors into the form `mlops.config` gives every key: `serve.workers:
expected ...`, `ingest.file.uri: missing required key`. `mlops.config.Params` embeds the same classes, so
the whole-file check applies the same rules, with the same messages.
"""

from __future__ import annotations

import re
import typing
from typing import Any

import msgspec

_AT = re.compile(r"^(?P<msg>.*?)(?: - at `\$(?P<path>[^`]*)`)?$", re.S)
_FIELD = re.compile(r"^Object (?P<what>missing required|contains unknown) field `(?P<field>[^`]+)`$")


def _lookup(data: Any, path: list[str]) -> Any:
    for part in path:
        data = data[int(part)] if isinstance(data, list) else data[part]
    return data


def _choices(root: type, path: list[str]) -> tuple[Any, ...]:
    """The values a Literal field at `path` (from the Struct `root`) allows."""
    hint: Any = root
    for part in path:
        hint = typing.get_type_hints(hint)[part]
        args = [a for a in typing.get_args(hint) if a is not type(None)]
        if len(args) == 1 and isinstance(args[0], type):  # Optional[Struct]
            hint = args[0]
    return typing.get_args(hint)


def describe(error: msgspec.ValidationError, data: Any, where: str, root: type) -> str:
    """msgspec's message as `<where>.<key path>: what is wrong (got type value)`."""
    m = _AT.match(str(error))
    assert m is not None  # the pattern matches any text
    path = [p for p in re.split(r"[.\[\]]+", m["path"] or "") if p]
    field = _FIELD.match(m["msg"])
    if field:
        loc = ".".join([where, *path, field["field"]])
        return f"{loc}: {'missing required key' if field['what'] == 'missing required' else 'unknown key'}"
    loc = ".".join([where, *path])
    msg = m["msg"].replace("Expected", "expected", 1).replace("`", "")
    if msg.startswith("Invalid enum value"):
        msg = f"expected one of {', '.join(map(repr, _choices(root, path)))}"
    try:
        got = _lookup(data, path)
    except (KeyError, IndexError, TypeError, ValueError):
        return f"{loc}: {msg}"
    return f"{loc}: {msg} (got {type(got).__name__} {got!r})"


def convert(data: Any, root: type, where: str) -> Any:
    """Validate one section's plain data (as parsed from YAML) into the Struct `root`.

    Raises:
        ValueError: the first offending key, named `where.<key path>` (a Struct's own `__post_init__`
            check raises its message as is).
    """
    try:
        return msgspec.convert(data, root)
    except msgspec.ValidationError as e:
        raise ValueError(describe(e, data, where, root)) from None


def to_builtins(value: Any) -> Any:
    """Plain data (MLflow params, params hashes, the server workers' settings)."""
    return msgspec.to_builtins(value)
