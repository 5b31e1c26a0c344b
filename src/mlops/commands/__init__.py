"""commands: the `mlops` commands that are not DVC stages, grouped by area (one module per group).

A stage's command lives in its own module (`mlops.stages.<name>`); `mlops.cli` imports this package only
for the other commands, so nothing here is a code dependency of a stage: editing an operation's options
or help never invalidates the pipeline's run-cache.
"""

from __future__ import annotations

import importlib

from mlops.commands.base import Command

GROUPS = ("serving", "models", "review", "deploy", "monitor", "orchestrate", "check")
"""The modules `mlops.commands.<group>`, each with its COMMANDS."""


def all_commands() -> dict[str, Command]:
    """Every operation command by name (importing the groups is cheap: handlers import lazily)."""
    out: dict[str, Command] = {}
    for group in GROUPS:
        out.update(importlib.import_module(f"mlops.commands.{group}").COMMANDS)
    return out
