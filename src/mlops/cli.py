"""cli: the only entry point, `mlops <command>`. Parses arguments, loads params, sets up logging.

Exit codes: 0 ok; 1 unexpected; 2 usage or config error; 3 data error; 4 gate failed; 5 model missing
or not ready; 6 promotion refused or checksum mismatch; 7 drift over the params.yaml `drift` thresholds
(`mlops drift`); 8 outputs did not reproduce the committed dvc.lock (`mlops lock-check`); 130 interrupted.
An expected error prints one line naming the file, key or column at fault; a traceback only with --debug.
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlops import __version__, numerics
from mlops.errors import ConfigError, MlopsError

if TYPE_CHECKING:  # pydantic costs ~0.3 s: `mlops --help` and usage errors do without it
    from mlops.config import Params
    from mlops.serve_params import ServeParams

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


# ------------------------------------------------------------------ commands
def cmd_fingerprint(args: argparse.Namespace, params: Params) -> None:
    from mlops import fingerprint

    fingerprint.run(params.ingest, args.out)


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
    from mlops import distributed, train
    from mlops.files import json_digest

    if distributed.wants_launch(params.train):  # train.distributed.nproc_per_node > 1: under torchrun
        code = distributed.launch(params.train, args.argv)
        if code:
            raise MlopsError(f"torchrun: training processes failed (exit {code}); see the rank logs above")
        return

    used = {name: params.section(name) for name in ("schema", "featurize", "train")}
    train.run(
        params.train,
        args.data_dir,
        args.model_dir,
        params_hash=json_digest(used),
        logged_params={k: used[k] for k in ("featurize", "train")},
    )


def cmd_evaluate(args: argparse.Namespace, params: Params) -> None:
    from mlops import evaluate

    result = evaluate.run(
        params.evaluate,
        args.model_dir,
        args.data,
        args.test,
        args.metrics,
        args.plots_dir,
        backend=params.serve.backend,
    )
    if args.json:
        print(json.dumps(result["test"], sort_keys=True))


def cmd_serve(args: argparse.Namespace, settings: ServeParams) -> None:
    from mlops import serve
    from mlops.serve_params import replace

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


def cmd_gate(args: argparse.Namespace, params: Params) -> None:
    from mlops import gate

    result = gate.run(
        params.gate,
        args.model_dir,
        args.data,
        args.test,
        args.metrics,
        args.out,
        args.markdown,
        fail=not args.no_fail,
        timings_path=args.timings,
        backend=params.serve.backend,
    )
    if args.json:
        print(json.dumps({"passed": result["passed"], "failed": result["failed"]}, sort_keys=True))


def cmd_register(args: argparse.Namespace, params: Params) -> None:
    from mlops import registry

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
    )
    if args.json:
        print(json.dumps(result, sort_keys=True))


def cmd_report(args: argparse.Namespace, params: Params) -> None:
    from mlops import forge, report

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
        outcome = forge.post(text)
        if outcome["action"] == "skipped":
            print(
                f"mlops report: not posted: {outcome['reason']}; the report is in {args.out}", file=sys.stderr
            )
        else:
            log.info("report: %s comment %s on %s", outcome["action"], outcome["id"], outcome["forge"])


def cmd_fetch_model(args: argparse.Namespace, params: Params | None) -> None:
    from mlops import registry

    result = registry.fetch_model(args.name, args.version, args.dest, expected_sha256=args.sha256)
    if args.json:
        print(json.dumps(result, sort_keys=True))


def cmd_promote(args: argparse.Namespace, params: Params) -> None:
    from mlops.deploy import promote

    result = promote.promote(
        args.repo,
        args.env,
        args.version,
        args.name,
        params.train.model_name,
        by=args.by,
        push=args.push,
        champion=params.champion,
        bins=params.evaluate.calibration_bins,
    )
    if args.json:
        print(json.dumps(result, sort_keys=True))


def cmd_rollback(args: argparse.Namespace, params: Params | None) -> None:
    from mlops.deploy import rollback

    result = rollback.rollback(args.repo, args.env, by=args.by, push=args.push)
    if args.json:
        print(json.dumps(result, sort_keys=True))


def cmd_rehearse(args: argparse.Namespace, params: Params | None) -> None:
    from mlops.deploy import rehearse

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


def cmd_trigger_retrain(args: argparse.Namespace, params: Params) -> None:
    from mlops.monitor import trigger, webhook

    if args.listen:
        webhook.serve(params.retrain, args.listen)
        return
    result = trigger.trigger_retrain(params.retrain, args.reason)
    if args.json:
        print(json.dumps(result.__dict__, sort_keys=True))
    else:
        print(f"mlops trigger-retrain: {result.message}" + (f" ({result.url})" if result.url else ""))


def cmd_retrain_mr(args: argparse.Namespace, params: Params) -> None:
    from mlops.monitor import retrain_mr

    result = retrain_mr.open_retrain_mr(args.repo, args.reason, params.retrain.ref, push=not args.no_push)
    if args.json:
        print(json.dumps(result, sort_keys=True))


def cmd_drift(args: argparse.Namespace, params: Params) -> None:
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


def cmd_lock_check(args: argparse.Namespace, params: Params) -> None:
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


def cmd_dvc_stage(args: argparse.Namespace, params: Params | None) -> None:
    from mlops.files import write_bytes
    from mlops.orchestrate import dag

    record = json.dumps(dag.load(args.dvc_yaml).record(args.stage), indent=2) + "\n"
    if args.out:
        write_bytes(args.out, record.encode())
    else:
        print(record, end="")


def cmd_kfp_compile(args: argparse.Namespace, params: Params | None) -> None:
    from mlops.orchestrate import dag, kfp_spec

    pipeline = dag.load(args.dvc_yaml)
    spec = kfp_spec.pipeline_spec(pipeline, args.image or kfp_spec.DEFAULT_IMAGE, args.project_dir)
    kfp_spec.compile_pipeline(spec, args.out, args.kfp_python)


def cmd_kfp_step(args: argparse.Namespace, params: Params | None) -> None:
    from mlops.orchestrate import step

    step.run(
        args.stage,
        args.cmd,
        project=args.project,
        pull=args.pull,
        upstream_locks=args.upstream_lock,
        lock_out=args.lock_out,
        remote_url=args.remote_url,
        mlflow_tracking_uri=args.mlflow_tracking_uri,
        workspace=args.workspace,
    )


# Default paths of the options several commands share: the paths declared in dvc.yaml (one place).
PATHS = {
    "--data": "data/raw/data.parquet",
    "--validation": "reports/validation.json",
    "--data-dir": "data/processed",
    "--test": "data/processed/test.parquet",
    "--model-dir": "models",
    "--metrics": "reports/metrics.json",
    "--plots-dir": "reports/plots",
    "--gate": "reports/gate.json",
}


def _fraction(text: str) -> float:
    """An argparse type: a number in [0, 1]."""
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text!r}: expected a number from 0 to 1")
    return value


def add_paths(parser: argparse.ArgumentParser, *options: str) -> None:
    """Add path options with their dvc.yaml defaults from PATHS."""
    for option in options:
        parser.add_argument(option, type=Path, default=Path(PATHS[option]), help="(default %(default)s)")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser; path options default to the paths declared in dvc.yaml."""
    parser = argparse.ArgumentParser(prog="mlops", description=__doc__.split("\n")[0])
    parser.add_argument("--version", action="version", version=f"mlops {__version__}")
    parser.add_argument(
        "--params", type=Path, default=Path("params.yaml"), help="params file (default %(default)s)"
    )
    parser.add_argument("--debug", action="store_true", help="debug logs and tracebacks")
    parser.add_argument("--log-json", action="store_true", help="JSON log lines on stderr")
    sub = parser.add_subparsers(dest="command", required=True, metavar="<command>")

    def add(name: str, func: Callable, help_: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_, description=help_)
        p.set_defaults(func=func)
        return p

    p = add(
        "fingerprint",
        cmd_fingerprint,
        "record a cheap fingerprint of the configured source (the file `ingest` depends on)",
    )
    p.add_argument("--out", type=Path, default=Path("data/raw/source.json"))

    p = add("ingest", cmd_ingest, "collect the raw table from the configured source")
    p.add_argument("--out", type=Path, default=Path("data/raw/data.parquet"))

    p = add(
        "validate", cmd_validate, "check the raw table against params.yaml `schema` (exit 3 on violation)"
    )
    add_paths(p, "--data")
    p.add_argument("--report", type=Path, default=Path("reports/validation.json"))

    p = add("featurize", cmd_featurize, "split and preprocess the validated table")
    add_paths(p, "--data", "--validation")
    p.add_argument("--out-dir", type=Path, default=Path("data/processed"))

    p = add("train", cmd_train, "train the MLP, write models/, track the run in MLflow")
    add_paths(p, "--data-dir", "--model-dir")

    p = add("evaluate", cmd_evaluate, "score the test split: metrics, slices, plots")
    add_paths(p, "--model-dir", "--data", "--test", "--metrics", "--plots-dir")
    p.add_argument("--json", action="store_true", help="print the test metrics as JSON on stdout")

    p = add("serve", cmd_serve, "serve the model over the Open Inference Protocol (REST) with /metrics")
    p.set_defaults(params_section="serve")  # the server reads only `serve` (validated without pydantic)
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

    p = add(
        "gate",
        cmd_gate,
        "check the candidate against the absolute rules of params.yaml `gate` (exit 4 on failure)",
    )
    add_paths(p, "--model-dir", "--data", "--test", "--metrics")
    p.add_argument("--out", type=Path, default=Path("reports/gate.json"))
    p.add_argument("--markdown", type=Path, default=Path("reports/gate.md"))
    p.add_argument(
        "--timings",
        type=Path,
        default=Path("reports/gate-timings.json"),
        help="measured latencies: machine-dependent, so git-ignored and not a DVC output "
        "(default %(default)s)",
    )
    p.add_argument("--no-fail", action="store_true", help="exploratory run: report failures but exit 0")
    p.add_argument("--json", action="store_true", help="print the verdict as JSON on stdout")

    p = add(
        "register",
        cmd_register,
        "register models/ in the MLflow registry with its drift reference and its labelled test rows "
        "(what promote compares on), alias `candidate` (exit 6 if the gate did not pass)",
    )
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
    p.add_argument("--json", action="store_true", help="print {name, version, uri, gate, created} on stdout")

    p = add(
        "report",
        cmd_report,
        "write the merge-request review report, with the champion comparison against production's "
        "record (shown, enforced by promote); --post comments it on GitHub/GitLab",
    )
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

    p = add(
        "fetch-model",
        cmd_fetch_model,
        "download a registered model version, verify its sha256, place it "
        "atomically (exit 5 missing, 6 checksum mismatch)",
    )
    p.set_defaults(needs_params=False)
    p.add_argument("--name", required=True, help="registered model name")
    p.add_argument("--version", required=True, help="version number or alias")
    p.add_argument("--dest", type=Path, required=True, help="target directory (created if missing)")
    p.add_argument(
        "--sha256",
        default=None,
        help="expected weights sha256 (the promotion record's); exit 6 if the registry's differs",
    )
    p.add_argument("--json", action="store_true", help="print {name, version, sha256, dest} on stdout")

    p = add(
        "promote",
        cmd_promote,
        "promote a registry version to deploy/envs/<env>/model.yaml by a commit (merge request for a "
        "protected env) and move the alias <env> (exit 6 if the gate did not pass, the sha256 differs "
        "or it regresses significantly against the env's current model: params.yaml `champion`)",
    )
    p.add_argument("--env", required=True, help="environment: a folder under deploy/envs/")
    p.add_argument("--version", required=True, help="registry version number or alias (e.g. candidate)")
    add_deploy_options(p)
    p.add_argument(
        "--name",
        default=None,
        help="registered model name (default: the env's record, else params.yaml train.model_name)",
    )

    p = add(
        "rollback",
        cmd_rollback,
        "restore the env's previous promotion record from git history as a new commit (or merge request)",
    )
    p.set_defaults(needs_params=False)
    p.add_argument("--env", required=True, help="environment: a folder under deploy/envs/")
    add_deploy_options(p)

    p = add(
        "rehearse",
        cmd_rehearse,
        "render the env's Argo CD Application and run its init and server containers under Docker: "
        "ready, infer, served version = the record (exit 5 if not)",
    )
    p.set_defaults(needs_params=False)
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

    p = add(
        "trigger-retrain",
        cmd_trigger_retrain,
        "start the retrain pipeline in CI (params.yaml `retrain`; a no-op within the cooldown), or "
        "--listen for Alertmanager webhooks",
    )
    how = p.add_mutually_exclusive_group(required=True)
    how.add_argument("--reason", help="why retrain now (shown in the CI run and the merge request)")
    how.add_argument(
        "--listen",
        metavar="HOST:PORT",
        help="serve POST /alertmanager (Alertmanager webhook v4) and GET /healthz until SIGTERM",
    )
    p.add_argument("--json", action="store_true", help="print {triggered, provider, message, url} on stdout")

    p = add(
        "retrain-mr",
        cmd_retrain_mr,
        "after `dvc repro` in the retrain job: commit dvc.lock and the changed tracked files to "
        "retrain/<date>, push, open the review merge request (nothing changed: nothing to do)",
    )
    p.add_argument("--reason", required=True, help="why this retrain ran (the merge request says it)")
    p.add_argument("--repo", type=Path, default=Path("."), help="git checkout (default .)")
    p.add_argument(
        "--no-push", action="store_true", help="commit the branch locally; no push, no merge request"
    )
    p.add_argument("--json", action="store_true", help="print the outcome as JSON on stdout")

    p = add(
        "drift",
        cmd_drift,
        "compare a window of logged predictions with the training reference (Evidently): report, "
        "summary, metrics; exit 7 on drift over params.yaml `drift`, 0 with insufficient data",
    )
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
    p = add("dvc-stage", cmd_dvc_stage, "a dvc.yaml stage as JSON: cmd, upstream stages, data deps, outs")
    p.set_defaults(needs_params=False)
    p.add_argument("stage", help="stage name")
    p.add_argument("--dvc-yaml", type=Path, default=Path("dvc.yaml"))
    p.add_argument("--out", type=Path, default=None, help="write here (default: stdout)")
    p = add("kfp-compile", cmd_kfp_compile, "compile dvc.yaml to a Kubeflow Pipelines definition (IR YAML)")
    p.set_defaults(needs_params=False)
    p.add_argument("--out", type=Path, required=True, help="pipeline YAML to write")
    p.add_argument("--dvc-yaml", type=Path, default=Path("dvc.yaml"))
    p.add_argument("--image", default=None, help="the project image (default: mlops-pipeline:<version>)")
    p.add_argument("--project-dir", default="/app", help="the DVC project's path in the image")
    p.add_argument("--kfp-python", default=None, help="a Python with kfp (default: $MLOPS_KFP_PYTHON, own)")
    p = add(
        "lock-check",
        cmd_lock_check,
        "did `dvc repro` reproduce the committed dvc.lock? (exit 8 when an output differs or the lock is stale)",
    )
    p.add_argument("--lock", type=Path, default=Path("dvc.lock"), help="the lock dvc repro wrote")
    p.add_argument("--ref", default="HEAD", help="git commit whose dvc.lock is the reference (default HEAD)")
    p.add_argument(
        "--log", type=Path, default=None, help="dvc repro's output: which stages ran or were restored"
    )
    p.add_argument("--out", type=Path, default=Path("reports/lock-check.json"))
    p.add_argument("--no-fail", action="store_true", help="report a mismatch but exit 0")
    p.add_argument("--json", action="store_true", help="print the verdict as JSON on stdout")

    p = add("kfp-step", cmd_kfp_step, "run one DVC stage as a pipeline step: dvc pull, the cmd, dvc push")
    p.set_defaults(needs_params=False)
    p.add_argument("--stage", required=True, help="stage name in dvc.yaml")
    p.add_argument("--project", type=Path, default=Path("."), help="the DVC project to copy (default .)")
    p.add_argument("--workspace", type=Path, default=None, help="where to run it (default: a new temp dir)")
    p.add_argument("--pull", action="append", default=[], help="a data dep to dvc pull (repeatable)")
    p.add_argument("--upstream-lock", type=Path, action="append", default=[], help="an upstream lock entry")
    p.add_argument("--lock-out", type=Path, required=True, help="write this stage's dvc.lock entry here")
    p.add_argument("--remote-url", default="", help="DVC remote URL (default: the project's remote)")
    p.add_argument("--mlflow-tracking-uri", default="", help="MLFLOW_TRACKING_URI for the cmd")
    p.add_argument("cmd", nargs="+", help="-- then the stage's cmd (must equal dvc.yaml's)")
    return parser


def add_deploy_options(p: argparse.ArgumentParser) -> None:
    """Options promote and rollback share."""
    p.add_argument("--repo", type=Path, default=Path("."), help="git checkout holding deploy/ (default .)")
    p.add_argument("--by", default=None, help="who promotes (default: the CI's user variable, else git's)")
    p.add_argument(
        "--push", action="store_true", help="unprotected env: push the commit to the tracked branch"
    )
    p.add_argument("--json", action="store_true", help="print the outcome as JSON on stdout")


def _load_params(args: argparse.Namespace) -> Any:
    """The params the command reads: all of params.yaml (validated whole), one section, or none."""
    if not getattr(args, "needs_params", True):  # fetch-model runs in an init container without one
        return None
    if getattr(args, "params_section", None) == "serve":
        from mlops.serve_params import load

        return load(args.params)
    from mlops.config import load_params

    return load_params(args.params)


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; return its exit code."""
    # before anything loads numpy or torch: the same bytes from every stage on any x86-64-v3 CPU
    preloaded = numerics.pin()
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # argparse exits 2 on usage errors, 0 on --help
        return int(e.code or 0)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # to start itself again (torchrun)
    setup_logging(args.debug, args.log_json)
    if preloaded:
        log.debug("numerics: %s loaded before the pin: they keep their own code paths", ", ".join(preloaded))
    started = time.perf_counter()
    try:
        args.func(args, _load_params(args))
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
