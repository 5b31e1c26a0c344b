"""commands.models: `mlops register` and `mlops fetch-model`, the MLflow registry.

Each command: its options (`add_<name>`) beside its handler (`cmd_<name>`), listed in COMMANDS.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from mlops.commands.base import Command
from mlops.paths import add_paths


def add_register(p: argparse.ArgumentParser) -> None:
    """Options of `mlops register`."""
    add_paths(p, "--model-dir", "--gate", "--metrics", "--data", "--test")
    p.add_argument(
        "--train",
        type=Path,
        default=Path("data/processed/train.parquet"),
        help="training split: a sample of its raw rows (from --data) becomes the version's drift "
        "reference, reference.parquet (default %(default)s)",
    )
    p.add_argument("--dvc-lock", type=Path, default=Path("dvc.lock"))
    p.add_argument("--name", default=None, help="registered model name (default: the name in model.json)")
    p.add_argument(
        "--allow-failed", action="store_true", help="register even if the gate failed (tag gate=failed)"
    )
    p.add_argument(
        "--image",
        action="append",
        default=[],
        metavar="NAME=REPOSITORY@DIGEST",
        help="an image built and pushed with this version (server, fetch, monitor, pipeline), by digest: "
        "tagged image.<NAME>, written into the record by promote (repeatable)",
    )
    p.add_argument(
        "--json", action="store_true", help="print {name, version, uri, gate, created, images} on stdout"
    )


def cmd_register(args: argparse.Namespace, params: Any) -> None:
    from mlops import registry
    from mlops.errors import ConfigError

    images: dict[str, str] = {}
    for value in args.image:
        key, sep, ref = value.partition("=")
        if not sep or not key or not ref:
            raise ConfigError(f"--image {value}: expected NAME=REPOSITORY@sha256:DIGEST")
        images[key] = ref
    result = registry.register(
        args.model_dir,
        args.gate,
        args.metrics,
        args.dvc_lock,
        params.train.experiment,
        name=args.name,
        allow_failed=args.allow_failed,
        reference_from=(args.data, args.train),
        reference_rows=params.drift.reference_rows,
        seed=params.drift.seed,
        evaluation_from=(args.data, args.test),
        images=images,
    )
    if args.json:
        print(json.dumps(result, sort_keys=True))


def add_fetch_model(p: argparse.ArgumentParser) -> None:
    """Options of `mlops fetch-model`."""
    p.add_argument("--name", required=True, help="registered model name")
    p.add_argument("--version", required=True, help="version number or alias")
    p.add_argument("--dest", type=Path, required=True, help="target directory (created if missing)")
    p.add_argument(
        "--sha256",
        default=None,
        help="expected weights sha256 (the promotion record's); exit 6 if the registry's differs",
    )
    p.add_argument("--json", action="store_true", help="print {name, version, sha256, dest} on stdout")


def cmd_fetch_model(args: argparse.Namespace, params: Any) -> None:
    from mlops import registry

    result = registry.fetch_model(args.name, args.version, args.dest, expected_sha256=args.sha256)
    if args.json:
        print(json.dumps(result, sort_keys=True))


COMMANDS = {
    "register": Command(
        "register models/ in the MLflow registry with its drift reference and its labelled test rows "
        "(what promote compares on), alias `candidate` (exit 6 if the gate did not pass)",
        add_register,
        cmd_register,
        params="all",
    ),
    "fetch-model": Command(
        "download a registered model version, verify its sha256, place it "
        "atomically (exit 5 missing, 6 checksum mismatch)",
        add_fetch_model,
        cmd_fetch_model,
        params=None,
    ),
}
"""Name -> the command (help line, options, handler, which params it loads)."""
