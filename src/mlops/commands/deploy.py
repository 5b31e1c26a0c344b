"""commands.deploy: `mlops promote`, `mlops rollback`, `mlops sync-aliases` and `mlops rehearse` (GitOps).

Each command: its options (`add_<name>`) beside its handler (`cmd_<name>`), listed in COMMANDS.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from mlops.commands.base import Command


def add_deploy_options(p: argparse.ArgumentParser) -> None:
    """Options promote and rollback share."""
    p.add_argument("--repo", type=Path, default=Path("."), help="git checkout holding deploy/ (default .)")
    p.add_argument("--by", default=None, help="who promotes (default: the CI's user variable, else git's)")
    p.add_argument(
        "--push", action="store_true", help="unprotected env: push the commit to the tracked branch"
    )
    p.add_argument("--json", action="store_true", help="print the outcome as JSON on stdout")


def add_promote(p: argparse.ArgumentParser) -> None:
    """Options of `mlops promote`."""
    p.add_argument("--env", required=True, help="environment: a folder under deploy/envs/")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--version", help="registry version number or alias (e.g. candidate)")
    which.add_argument(
        "--registered",
        type=Path,
        metavar="JSON",
        help="the output of `mlops register --json` (CI: reports/registered.json): promote exactly the "
        "name and version it registered",
    )
    add_deploy_options(p)
    p.add_argument(
        "--name",
        default=None,
        help="registered model name (default: the env's record, else params.yaml train.model_name)",
    )


def registered(path: Path) -> tuple[str, str]:
    """(name, version) from `mlops register --json` output; ConfigError naming the file otherwise."""
    from mlops.errors import ConfigError

    try:
        data = json.loads(path.read_text())
        return str(data["name"]), str(data["version"])
    except FileNotFoundError as e:
        raise ConfigError(
            f"{path}: not found (the release job writes it with `mlops register --json`; CI passes it to "
            "promote as an artifact)"
        ) from e
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ConfigError(
            f"{path}: expected `mlops register --json` output with name and version ({e})"
        ) from e


def cmd_promote(args: argparse.Namespace, params: Any) -> None:
    from mlops.gitops import promote

    name, version = (args.name, args.version)
    if args.registered is not None:
        name, version = registered(args.registered)
        if args.name and args.name != name:
            from mlops.errors import ConfigError

            raise ConfigError(f"--name {args.name}: {args.registered} registered {name!r}")
    result = promote.promote(
        args.repo,
        args.env,
        version,
        name,
        params.train.model_name,
        by=args.by,
        push=args.push,
        champion=params.champion,
        bins=params.evaluate.calibration_bins,
    )
    if args.json:
        print(json.dumps(result, sort_keys=True))


def add_rollback(p: argparse.ArgumentParser) -> None:
    """Options of `mlops rollback`."""
    p.add_argument("--env", required=True, help="environment: a folder under deploy/envs/")
    add_deploy_options(p)


def cmd_rollback(args: argparse.Namespace, params: Any) -> None:
    from mlops.gitops import rollback

    result = rollback.rollback(args.repo, args.env, by=args.by, push=args.push)
    if args.json:
        print(json.dumps(result, sort_keys=True))


def add_sync_aliases(p: argparse.ArgumentParser) -> None:
    """Options of `mlops sync-aliases`."""
    p.add_argument("--repo", type=Path, default=Path("."), help="git checkout holding deploy/ (default .)")
    p.add_argument("--json", action="store_true", help="print each env's outcome as JSON on stdout")


def cmd_sync_aliases(args: argparse.Namespace, params: Any) -> None:
    from mlops.gitops import sync

    result = sync.sync_aliases(args.repo)
    if args.json:
        print(json.dumps(result, sort_keys=True))


def add_rehearse(p: argparse.ArgumentParser) -> None:
    """Options of `mlops rehearse`."""
    p.add_argument("--env", required=True, help="environment: a folder under deploy/envs/")
    p.add_argument("--repo", type=Path, default=Path("."), help="git checkout holding deploy/ and charts/")
    p.add_argument(
        "--image",
        action="append",
        default=[],
        metavar="RENDERED=LOCAL",
        help="run the local image LOCAL where the manifests name RENDERED (repeatable)",
    )
    p.add_argument(
        "--secret",
        action="append",
        default=[],
        metavar="SECRET/KEY=VALUE",
        help="a value of a Secret the pod reads (the cluster holds them; repeatable)",
    )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="an extra Helm parameter for the Application, like `argocd app set -p` (repeatable)",
    )
    p.add_argument("--timeout", type=float, default=180.0, help="seconds until ready (default %(default)s)")
    p.add_argument("--json", action="store_true", help="print the rehearsal's result as JSON on stdout")


def cmd_rehearse(args: argparse.Namespace, params: Any) -> None:
    from mlops.gitops import rehearse

    result = rehearse.run(
        args.repo,
        args.env,
        images=dict(rehearse.pair(v, "--image") for v in args.image),
        secrets=rehearse.secrets(args.secret),
        parameters=dict(rehearse.pair(v, "--set") for v in args.set),
        timeout=args.timeout,
    )
    if args.json:
        print(json.dumps(result, sort_keys=True))


COMMANDS = {
    "promote": Command(
        "promote a registry version to deploy/envs/<env>/model.yaml by a commit (merge request for a "
        "protected env) and move the alias <env> (exit 6 if the gate did not pass, the sha256 differs "
        "or it regresses significantly against the env's current model: params.yaml `champion`)",
        add_promote,
        cmd_promote,
        params="all",
    ),
    "rollback": Command(
        "restore the env's previous promotion record from git history as a new commit (or merge request)",
        add_rollback,
        cmd_rollback,
        params=None,
    ),
    "sync-aliases": Command(
        "point each env's MLflow alias at the version of its committed promotion record (after a merged "
        "production merge request; exit 6 if the registry's weights sha256 differs from the record's)",
        add_sync_aliases,
        cmd_sync_aliases,
        params=None,
    ),
    "rehearse": Command(
        "render the env's Argo CD Application and run its init and server containers under Docker: "
        "ready, infer, served version = the record (exit 5 if not)",
        add_rehearse,
        cmd_rehearse,
        params=None,
    ),
}
"""Name -> the command (help line, options, handler, which params it loads)."""
