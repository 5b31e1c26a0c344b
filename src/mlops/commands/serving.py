"""commands.serving: `mlops serve`, the Open Inference Protocol model server.

Each command: its options (`add_<name>`) beside its handler (`cmd_<name>`), listed in COMMANDS.
"""

from __future__ import annotations

import argparse
from typing import Any

from mlops.commands.base import Command
from mlops.errors import ConfigError
from mlops.paths import add_paths


def _fraction(text: str) -> float:
    """An argparse type: a number in [0, 1]."""
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a number from 0 to 1")
    return value


def add_serve(p: argparse.ArgumentParser) -> None:
    """Options of `mlops serve`."""
    add_paths(p, "--model-dir")
    p.add_argument(
        "--host", default="127.0.0.1", help="bind address (default %(default)s; 0.0.0.0 in a container)"
    )
    p.add_argument("--port", type=int, default=8080)
    p.add_argument(
        "--model-version",
        default=None,
        help="version reported by the API and /metrics (default: env MLOPS_MODEL_VERSION, else the "
        "first 12 hex digits of the weights sha256)",
    )
    p.add_argument(
        "--prediction-log-dir",
        default=None,
        help="where the prediction log goes: a directory or fsspec URL (default: params.yaml "
        "serve.prediction_log.dir)",
    )
    p.add_argument(
        "--prediction-log-rate",
        type=_fraction,
        default=None,
        help="fraction of requests logged, 0..1 (default: params.yaml serve.prediction_log.rate)",
    )


def cmd_serve(args: argparse.Namespace, settings: Any) -> None:
    from mlops import serve
    from mlops.params.serve import replace

    if args.prediction_log_dir is not None or args.prediction_log_rate is not None:
        # the chart sets where the log goes per environment (the drift CronJob reads the same place)
        log_params = {
            k: v
            for k, v in (("dir", args.prediction_log_dir), ("rate", args.prediction_log_rate))
            if v is not None
        }
        try:
            settings = replace(settings, prediction_log=log_params)
        except ValueError as e:
            raise ConfigError(f"--prediction-log-dir/--prediction-log-rate: {e}") from None
    serve.run(
        settings,
        args.model_dir,
        host=args.host,
        port=args.port,
        model_version=args.model_version,
    )


COMMANDS = {
    "serve": Command(
        "serve the model over the Open Inference Protocol (REST) with /metrics",
        add_serve,
        cmd_serve,
        params="serve",
    ),
}
"""Name -> the command (help line, options, handler, which params it loads)."""
