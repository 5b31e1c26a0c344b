"""commands.monitor: `mlops drift`, `mlops trigger-retrain` and `mlops retrain-mr`.

Each command: its options (`add_<name>`) beside its handler (`cmd_<name>`), listed in COMMANDS.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from mlops.commands.base import Command
from mlops.paths import add_paths


def add_drift(p: argparse.ArgumentParser) -> None:
    """Options of `mlops drift`."""
    p.add_argument(
        "--log-dir",
        default="logs/predictions",
        help="prediction log: directory or fsspec URL (serve.prediction_log.dir; default %(default)s)",
    )
    p.add_argument(
        "--reference",
        default="data/processed/train.parquet",
        help="reference.parquet of the served model (raw features), or an encoded split joined with "
        "--data (default %(default)s)",
    )
    add_paths(p, "--data")
    p.add_argument("--out-dir", type=Path, default=Path("reports/drift"))
    p.add_argument("--window-hours", type=float, default=None, help="default: params.yaml drift.window_hours")
    p.add_argument("--push-url", default=None, help="Pushgateway URL (default: params.yaml drift.push_url)")
    p.add_argument(
        "--metrics-file", type=Path, default=None, help="also write the metrics (text format) here"
    )
    p.add_argument(
        "--trigger", action="store_true", help="call the retrain trigger on drift (params.yaml `retrain`)"
    )
    p.add_argument("--json", action="store_true", help="print {status, drifted_features, share} on stdout")

    # orchestration (mlops/orchestrate): dvc.yaml as a Kubeflow Pipelines definition and TrainJob input


def cmd_drift(args: argparse.Namespace, params: Any) -> None:
    from mlops.errors import DriftDetected
    from mlops.monitor import drift

    def show(summary: dict) -> None:
        if args.json:
            keys = ("status", "drifted_features", "share_drifted_features")
            print(json.dumps({k: summary[k] for k in keys}))

    try:
        summary = drift.run(
            params,
            args.log_dir,
            args.reference,
            args.out_dir,
            window_hours=args.window_hours,
            push_url=args.push_url,
            metrics_file=args.metrics_file,
            trigger=args.trigger,
            data=args.data,
        )
    except DriftDetected as e:  # exit 7 still prints the verdict
        show(e.summary)  # type: ignore[attr-defined]
        raise
    show(summary)


def add_trigger_retrain(p: argparse.ArgumentParser) -> None:
    """Options of `mlops trigger-retrain`."""
    how = p.add_mutually_exclusive_group(required=True)
    how.add_argument("--reason", help="why retrain now (shown in the CI run and the merge request)")
    how.add_argument(
        "--listen",
        metavar="HOST:PORT",
        help="serve POST /alertmanager (Alertmanager webhook v4) and GET /healthz until SIGTERM",
    )
    p.add_argument("--json", action="store_true", help="print {triggered, provider, message, url} on stdout")


def cmd_trigger_retrain(args: argparse.Namespace, params: Any) -> None:
    from mlops.monitor import trigger, webhook

    if args.listen:
        webhook.serve(params.retrain, args.listen)
        return
    result = trigger.trigger_retrain(params.retrain, args.reason)
    if args.json:
        print(json.dumps(result.__dict__, sort_keys=True))
    else:
        print(f"mlops trigger-retrain: {result.message}" + (f" ({result.url})" if result.url else ""))


def add_retrain_mr(p: argparse.ArgumentParser) -> None:
    """Options of `mlops retrain-mr`."""
    p.add_argument("--reason", required=True, help="why this retrain ran (the merge request says it)")
    p.add_argument("--repo", type=Path, default=Path("."), help="git checkout (default .)")
    p.add_argument(
        "--no-push", action="store_true", help="commit the branch locally; no push, no merge request"
    )
    p.add_argument("--json", action="store_true", help="print the outcome as JSON on stdout")


def cmd_retrain_mr(args: argparse.Namespace, params: Any) -> None:
    from mlops.monitor import retrain_mr

    result = retrain_mr.open_retrain_mr(args.repo, args.reason, params.retrain.ref, push=not args.no_push)
    if args.json:
        print(json.dumps(result, sort_keys=True))


COMMANDS = {
    "drift": Command(
        "compare a window of logged predictions with the training reference (Evidently): report, "
        "summary, metrics; exit 7 on drift over params.yaml `drift`, 0 with insufficient data",
        add_drift,
        cmd_drift,
        params="all",
    ),
    "trigger-retrain": Command(
        "start the retrain pipeline in CI (params.yaml `retrain`; a no-op within the cooldown), or "
        "--listen for Alertmanager webhooks",
        add_trigger_retrain,
        cmd_trigger_retrain,
        params="all",
    ),
    "retrain-mr": Command(
        "after `dvc repro` in the retrain job: commit dvc.lock and the changed tracked files to "
        "retrain/<date>, push, open the review merge request (nothing changed: nothing to do)",
        add_retrain_mr,
        cmd_retrain_mr,
        params="all",
    ),
}
"""Name -> the command (help line, options, handler, which params it loads)."""
