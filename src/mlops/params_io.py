"""params_io: read params.yaml the way DVC reads it (YAML 1.2, ruamel.yaml), so the two never disagree.

PyYAML implements YAML 1.1, where `No`, `Yes`, `on` and `off` are booleans and `1e-3` is a string.
DVC parses and rewrites params.yaml with ruamel.yaml (YAML 1.2): `dvc exp run -S train.lr=0.01`
writes `classes: [No, Yes]` unquoted, and `dvc params diff` compares YAML 1.2 values. Reading the file
with the same rules keeps `mlops`, DVC and its experiments in agreement.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from mlops.errors import ConfigError


def parse_yaml(text: str, source: str) -> Any:
    """Parse YAML 1.2 text into plain dicts, lists and scalars.

    Raises:
        ConfigError: not valid YAML (names `source` and the position), or a duplicated key.
    """
    from ruamel.yaml import YAML
    from ruamel.yaml.error import YAMLError

    try:
        return YAML(typ="safe", pure=True).load(text)
    except YAMLError as e:
        raise ConfigError(f"{source}: not valid YAML: {e}".replace("\n", " ")) from e


def sections(data: Any, source: str) -> dict[str, Any]:
    """The parsed params document as its mapping of sections.

    Raises:
        ConfigError: the document is not a mapping (names `source`).
    """
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping of sections, got {type(data).__name__}")
    return data


def read_yaml(path: str | os.PathLike[str]) -> Any:
    """Read and parse a YAML 1.2 file.

    Raises:
        ConfigError: the file cannot be read or is not valid YAML (names the file).
    """
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise ConfigError(f"{path}: cannot read params file ({e.strerror})") from e
    return parse_yaml(text, str(path))
