"""commands.base: what an operation command is (the commands that are not DVC stages)."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal


@dataclass(frozen=True)
class Command:
    """One `mlops <name>` operation: its help line, its options, its handler and the params it loads.

    `params`: "all" (the whole params.yaml, validated and cross-checked: `mlops.config`), "serve" (only the
    server's section, validated without pydantic) or None (no params file: an init container).
    """

    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]
    main: Callable[[argparse.Namespace, Any], None]
    params: Literal["all", "serve"] | None = "all"
