"""cli: the only entry point, `mlops <command>`. Parses arguments, loads params, sets up logging.

Exit codes: 0 ok; 1 unexpected; 2 usage or config error; 3 data error; 4 gate failed; 5 model missing
or not ready; 6 promotion refused or checksum mismatch. An expected error prints one line naming the
file, key or column at fault; a traceback only with --debug.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from mlops import __version__
from mlops.config import Params, load_params
from mlops.errors import MlopsError

log = logging.getLogger("mlops")


class _JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        return json.dumps({"ts": round(record.created, 3), "level": record.levelname, "logger": record.name,
                           "msg": record.getMessage()})


def setup_logging(debug: bool, json_logs: bool) -> None:
    """Log to stderr (stdout is for machine-readable output only)."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_JsonFormatter() if json_logs else logging.Formatter(
        "%(asctime)s %(levelname)s %(name)s: %(message)s", "%H:%M:%S"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if debug else logging.INFO)
    for noisy in ("alembic", "mlflow", "urllib3", "matplotlib"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


# ------------------------------------------------------------------ commands
def cmd_ingest(args: argparse.Namespace, params: Params) -> None:
    from mlops import ingest

    ingest.run(params.ingest, args.out)


def cmd_validate(args: argparse.Namespace, params: Params) -> None:
    from mlops import validate

    validate.run(params.schema_, params.validate_.max_examples, args.data, args.report)


def cmd_featurize(args: argparse.Namespace, params: Params) -> None:
    from mlops import featurize

    featurize.run(params.schema_, params.featurize, args.data, args.validation, args.out_dir)


def cmd_train(args: argparse.Namespace, params: Params) -> None:
    from mlops import train
    from mlops.files import json_digest

    used = {name: params.section(name) for name in ("schema", "featurize", "train")}
    train.run(params.train, args.data_dir, args.model_dir, params_hash=json_digest(used),
              logged_params={k: used[k] for k in ("featurize", "train")})


def cmd_evaluate(args: argparse.Namespace, params: Params) -> None:
    from mlops import evaluate

    result = evaluate.run(params.evaluate, args.model_dir, args.data, args.test, args.metrics, args.plots_dir)
    if args.json:
        print(json.dumps(result["test"], sort_keys=True))


def build_parser() -> argparse.ArgumentParser:
    """The argument parser; path options default to the paths declared in dvc.yaml."""
    parser = argparse.ArgumentParser(prog="mlops", description=__doc__.split("\n")[0])
    parser.add_argument("--version", action="version", version=f"mlops {__version__}")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"), help="params file (default %(default)s)")
    parser.add_argument("--debug", action="store_true", help="debug logs and tracebacks")
    parser.add_argument("--log-json", action="store_true", help="JSON log lines on stderr")
    sub = parser.add_subparsers(dest="command", required=True, metavar="<command>")

    def add(name: str, func: Callable, help_: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_, description=help_)
        p.set_defaults(func=func)
        return p

    p = add("ingest", cmd_ingest, "collect the raw table from the configured source")
    p.add_argument("--out", type=Path, default=Path("data/raw/data.parquet"))

    p = add("validate", cmd_validate, "check the raw table against params.yaml `schema` (exit 3 on violation)")
    p.add_argument("--data", type=Path, default=Path("data/raw/data.parquet"))
    p.add_argument("--report", type=Path, default=Path("reports/validation.json"))

    p = add("featurize", cmd_featurize, "split and preprocess the validated table")
    p.add_argument("--data", type=Path, default=Path("data/raw/data.parquet"))
    p.add_argument("--validation", type=Path, default=Path("reports/validation.json"))
    p.add_argument("--out-dir", type=Path, default=Path("data/processed"))

    p = add("train", cmd_train, "train the MLP, write models/, track the run in MLflow")
    p.add_argument("--data-dir", type=Path, default=Path("data/processed"))
    p.add_argument("--model-dir", type=Path, default=Path("models"))

    p = add("evaluate", cmd_evaluate, "score the test split: metrics, slices, plots")
    p.add_argument("--model-dir", type=Path, default=Path("models"))
    p.add_argument("--data", type=Path, default=Path("data/raw/data.parquet"))
    p.add_argument("--test", type=Path, default=Path("data/processed/test.parquet"))
    p.add_argument("--metrics", type=Path, default=Path("reports/metrics.json"))
    p.add_argument("--plots-dir", type=Path, default=Path("reports/plots"))
    p.add_argument("--json", action="store_true", help="print the test metrics as JSON on stdout")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; return its exit code."""
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # argparse exits 2 on usage errors, 0 on --help
        return int(e.code or 0)
    setup_logging(args.debug, args.log_json)
    started = time.perf_counter()
    try:
        params = load_params(args.params)
        args.func(args, params)
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
        print(f"mlops {args.command}: unexpected error: {type(e).__name__}: {e} (rerun with --debug)",
              file=sys.stderr)
        return 1
    log.debug("%s done in %.2fs", args.command, time.perf_counter() - started)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
