"""cli: the only entry point, `mlops <command>`. Pins the numerics, parses arguments, loads params, logs.

It knows no command's options. `mlops <stage>` runs `mlops.stages.<stage>` (its options, params sections
and handler live there) and imports nothing else of the project, so a stage's code dependencies are this
file, the stage module and what that imports; every other command comes from `mlops.commands`.

Exit codes: 0 ok; 1 unexpected; 2 usage or config error; 3 data error; 4 gate failed; 5 model missing
or not ready; 6 promotion refused or checksum mismatch; 7 drift over the params.yaml `drift` thresholds
(`mlops drift`); 8 outputs did not reproduce the committed dvc.lock (`mlops lock-check`); 130 interrupted.
An expected error prints one line naming the file, key or column at fault; a traceback only with --debug.
"""

from __future__ import annotations

import argparse
import ast
import importlib
import json
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

from mlops import __version__, numerics
from mlops.errors import MlopsError

log = logging.getLogger("mlops")


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return json.dumps(
            {
                "ts": round(record.created, 3),
                "level": record.levelname,
                "pid": record.process,
                "logger": record.name,
                "msg": record.getMessage(),
            }
        )


def setup_logging(debug: bool, json_logs: bool) -> None:
    """Log to stderr (stdout is for machine-readable output only)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        _JsonFormatter()
        if json_logs
        else logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S")
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if debug else logging.INFO)
    for noisy in ("alembic", "mlflow", "urllib3", "matplotlib"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


# ------------------------------------------------------------------ dispatch
STAGES_DIR = Path(__file__).parent / "stages"


def stage_names() -> list[str]:
    """The DVC stages' command names (the modules in mlops/stages/), sorted."""
    return sorted(p.stem for p in STAGES_DIR.glob("*.py") if not p.stem.startswith("_"))


def _stage_help(name: str) -> str:
    """A stage's HELP line, read from its source without importing it (torch and pandas stay unloaded)."""
    tree = ast.parse((STAGES_DIR / f"{name}.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", None) == "HELP" for t in node.targets):
            value = ast.literal_eval(node.value)
            return str(value)
    return ""


def _top_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="mlops",
        description=__doc__.split("\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
        usage="mlops [-h] [--version] [--params PARAMS] [--debug] [--log-json] <command> ...",
    )
    parser.add_argument("--version", action="version", version=f"mlops {__version__}")
    parser.add_argument(
        "--params", type=Path, default=Path("params.yaml"), help="params file (default %(default)s)"
    )
    parser.add_argument("--debug", action="store_true", help="debug logs and tracebacks")
    parser.add_argument("--log-json", action="store_true", help="JSON log lines on stderr")
    parser.add_argument("command", nargs="?", metavar="<command>", help="a stage or an operation (below)")
    parser.add_argument("rest", nargs=argparse.REMAINDER, help=argparse.SUPPRESS)
    return parser


# Functions whose names contain "operation" or "_listing" run only for operations and --help: they are
# not on a stage's path (tests/test_stage_deps.py leaves their imports out of a stage's code deps).
def _listing() -> str:
    """The commands for `mlops --help`: the stages in pipeline order, then the operations."""
    from mlops import commands

    order = ["fingerprint", "ingest", "validate", "featurize", "train", "evaluate", "gate"]
    stages = [s for s in order if s in stage_names()] + [s for s in stage_names() if s not in order]
    lines = ["pipeline stages (dvc.yaml runs them):"]
    lines += [f"  {name:<16} {_stage_help(name)}" for name in stages]
    lines += ["", "operations:"]
    lines += [f"  {name:<16} {c.help}" for name, c in commands.all_commands().items()]
    return "\n".join(lines)


def _operation(name: str) -> Any:
    """The operation command `name` (None if there is none); only operations import mlops.commands."""
    from mlops import commands

    return commands.all_commands().get(name)


def _resolve(name: str) -> tuple[ModuleType | None, Any]:
    """(the stage module, None) for a stage; (None, the Command) for an operation; (None, None) if unknown."""
    if name in stage_names():
        return importlib.import_module(f"mlops.stages.{name}"), None
    return None, _operation(name)


def parse_args(argv: Sequence[str]) -> argparse.Namespace:
    """Parse a whole `mlops` command line (global options, the command, its options) as `main` does.

    Raises:
        SystemExit: a usage error (exit 2) or --help (exit 0), as argparse does.
    """
    top = _top_parser()
    ns = top.parse_args(list(argv))
    if ns.command is None:
        top.epilog = _listing()
        top.print_help(sys.stderr)
        raise SystemExit(2)
    stage, command = _resolve(ns.command)
    if stage is None and command is None:
        top.epilog = _listing()
        top.error(f"unknown command {ns.command!r}")
    help_ = stage.HELP if stage is not None else command.help
    sub = argparse.ArgumentParser(prog=f"mlops {ns.command}", description=help_)
    (stage.add_arguments if stage is not None else command.add_arguments)(sub)
    args = sub.parse_args(ns.rest)
    for key in ("params", "debug", "log_json", "command"):
        setattr(args, key, getattr(ns, key))
    args.stage_module, args.operation_command = stage, command
    return args


def _stage_params(args: argparse.Namespace) -> Any:
    """A stage's own params sections, validated alone."""
    from mlops.params.sections import load_sections

    return load_sections(args.params, args.stage_module.SECTIONS)


def _operation_params(args: argparse.Namespace) -> Any:
    """An operation's params: the whole file (validated and cross-checked), the server's section, or none."""
    kind = args.operation_command.params
    if kind is None:  # fetch-model runs in an init container without a params file
        return None
    if kind == "serve":
        from mlops.params.serve import load

        return load(args.params)
    from mlops.config import load_params

    return load_params(args.params)


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; return its exit code."""
    # before anything loads numpy or torch: the same bytes from every stage on any x86-64-v3 CPU
    preloaded = numerics.pin()
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        top = _top_parser()
        top.epilog = _listing()
        top.print_help(sys.stdout if argv else sys.stderr)
        return 0 if argv else 2
    try:
        args = parse_args(argv)
    except SystemExit as e:  # argparse exits 2 on usage errors, 0 on --help
        return int(e.code or 0)
    args.argv = argv  # to start itself again (torchrun)
    setup_logging(args.debug, args.log_json)
    if preloaded:
        log.debug("numerics: %s loaded before the pin: they keep their own code paths", ", ".join(preloaded))
    started = time.perf_counter()
    stage = args.stage_module is not None
    handler = args.stage_module.main if stage else args.operation_command.main
    try:
        handler(args, _stage_params(args) if stage else _operation_params(args))
    except MlopsError as e:
        if args.debug:
            log.exception("%s failed", args.command)
        print(f"mlops {args.command}: error: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        print(f"mlops {args.command}: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # noqa: BLE001 - the one place unexpected errors become exit 1
        if args.debug:
            log.exception("%s failed", args.command)
        print(
            f"mlops {args.command}: unexpected error: {type(e).__name__}: {e} (rerun with --debug)",
            file=sys.stderr,
        )
        return 1
    log.debug("%s done in %.2fs", args.command, time.perf_counter() - started)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
