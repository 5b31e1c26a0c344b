"""commands.check: `mlops check-params`, the whole params.yaml validated and cross-checked at once.

Each DVC stage validates only the sections it reads; this command (run by `make run` before `dvc repro`,
and by CI's verify through the tests) checks every section, the keys no stage reads included, and the
checks across sections (slice and expectation columns must be schema columns).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from mlops.commands.base import Command


def add_check_params(p: argparse.ArgumentParser) -> None:
    """Options of `mlops check-params`."""
    p.add_argument("--json", action="store_true", help="print the section names as JSON on stdout")


def cmd_check_params(args: argparse.Namespace, params: Any) -> None:
    names = list(type(params).model_fields)
    if args.json:
        print(json.dumps({"ok": True, "sections": names}))
    else:
        print(f"mlops check-params: {args.params}: {len(names)} sections valid")


def add_reference(p: argparse.ArgumentParser) -> None:
    """Options of `mlops reference`."""
    p.add_argument(
        "--out-dir",
        type=Path,
        default=Path("docs/reference"),
        help="where the pages go (default %(default)s)",
    )


def cmd_reference(args: argparse.Namespace, params: Any) -> None:
    from mlops import files, reference

    for name, text in reference.generate(Path(".")).items():
        files.write_bytes(args.out_dir / name, text.encode())
    print(f"mlops reference: {', '.join(reference.PAGES)} -> {args.out_dir}")


COMMANDS = {
    "check-params": Command(
        "validate the whole params.yaml: every section and the checks across sections (exit 2 naming the key)",
        add_check_params,
        cmd_check_params,
    ),
    "reference": Command(
        "write the docs' reference pages (params, CLI, exit codes, make targets) from the code that defines them",
        add_reference,
        cmd_reference,
        params=None,
    ),
}
"""Name -> the command."""
