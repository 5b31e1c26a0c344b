"""commands.review: `mlops report` (the merge-request review) and `mlops lock-check` (did CI reproduce dvc.lock).

Each command: its options (`add_<name>`) beside its handler (`cmd_<name>`), listed in COMMANDS.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
from pathlib import Path
from typing import Any

from mlops.commands.base import Command
from mlops.paths import add_paths

log = logging.getLogger("mlops.report")


def add_report(p: argparse.ArgumentParser) -> None:
    """Options of `mlops report`."""
    add_paths(p, "--gate", "--metrics", "--plots-dir", "--model-dir", "--data", "--test")
    p.add_argument(
        "--champion",
        type=Path,
        default=Path("deploy/envs/production/model.yaml"),
        help="promotion record of the model to compare with (default %(default)s); with one, the "
        "registry and the test rows (--data, --test) are needed",
    )
    p.add_argument(
        "--out",
        type=Path,
        default=Path("reports/review/report.md"),
        help="markdown report; PNG plots go to plots/ next to it (default %(default)s)",
    )
    p.add_argument(
        "--target",
        default=None,
        help="git revision to diff metrics and params against (default: the CI's merge target "
        "branch as origin/<branch>, else main)",
    )
    p.add_argument(
        "--post", action="store_true", help="create or update the one comment on the merge request"
    )


def cmd_report(args: argparse.Namespace, params: Any) -> None:
    from mlops import report, review_comment

    text = report.build(
        args.gate,
        args.metrics,
        args.plots_dir,
        args.model_dir,
        args.champion,
        args.out,
        params.section("train"),
        args.target or report.target_branch(),
        Path.cwd(),
        params.section("model_card"),
        comparison=report.Comparison(params.champion, params.evaluate.calibration_bins, args.data, args.test),
    )
    if args.post:
        outcome = review_comment.post(text)
        if outcome["action"] == "skipped":
            print(
                f"mlops report: not posted: {outcome['reason']}; the report is in {args.out}", file=sys.stderr
            )
        else:
            log.info("report: %s comment %s on %s", outcome["action"], outcome["id"], outcome["forge"])


def add_lock_check(p: argparse.ArgumentParser) -> None:
    """Options of `mlops lock-check`."""
    p.add_argument("--lock", type=Path, default=Path("dvc.lock"), help="the lock dvc repro wrote")
    p.add_argument("--ref", default="HEAD", help="git commit whose dvc.lock is the reference (default HEAD)")
    p.add_argument(
        "--log", type=Path, default=None, help="dvc repro's output: which stages ran or were restored"
    )
    p.add_argument("--out", type=Path, default=Path("reports/lock-check.json"))
    p.add_argument("--no-fail", action="store_true", help="report a mismatch but exit 0")
    p.add_argument("--json", action="store_true", help="print the verdict as JSON on stdout")


def cmd_lock_check(args: argparse.Namespace, params: Any) -> None:
    from mlops import lockcheck

    result = lockcheck.run(
        args.lock,
        args.ref,
        args.log,
        args.out,
        fail_on_mismatch=params.reproducibility.fail_on_mismatch and not args.no_fail,
    )
    if args.json:
        print(json.dumps({"verdict": result["verdict"], "summary": lockcheck.summary(result)}))


COMMANDS = {
    "report": Command(
        "write the merge-request review report, with the champion comparison against production's "
        "record (shown, enforced by promote); --post comments it on GitHub/GitLab",
        add_report,
        cmd_report,
        params="all",
    ),
    "lock-check": Command(
        "did `dvc repro` reproduce the committed dvc.lock? (exit 8 when an output differs or the lock is stale)",
        add_lock_check,
        cmd_lock_check,
        params="all",
    ),
}
"""Name -> the command (help line, options, handler, which params it loads)."""
