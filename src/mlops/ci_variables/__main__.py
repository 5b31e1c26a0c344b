"""`python -m mlops.ci_variables check <target> | markdown [--out FILE]` (the Makefile calls it)."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from pathlib import Path

from mlops.ci_variables import DOC, TARGETS


def main(argv: Sequence[str] | None = None) -> int:
    """Run `check` or `markdown`; return the exit code (2: a missing variable or a usage error)."""
    parser = argparse.ArgumentParser(
        prog="python -m mlops.ci_variables", description="the CI variables contract"
    )
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("check", help="under CI=true: exit 2 naming each variable the target needs and lacks")
    p.add_argument("target", choices=TARGETS, help="a ci-* make target")
    p.add_argument("--repo", type=Path, default=Path("."), help="the checkout (default .)")
    p = sub.add_parser("markdown", help=f"the reference page ({DOC})")
    p.add_argument("--out", type=Path, default=None, help="write it here (default: stdout)")
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # argparse: 2 on a usage error, 0 on --help
        return int(e.code or 0)
    if args.command == "check":
        from mlops.ci_variables.check import check

        return check(args.target, os.environ, args.repo)
    from mlops.ci_variables.docs import markdown

    text = markdown()
    if args.out is None:
        sys.stdout.write(text)
        return 0
    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_name(args.out.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(args.out)  # atomic: an interrupted run leaves the old page
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
