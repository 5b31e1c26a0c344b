"""registry: models/ <-> the MLflow model registry (register a gated model, fetch a version, champion record).

`register()` logs models/ as an MLflow pyfunc (safetensors + JSON artifacts, loaded by the "models from
code" file `pyfunc_model.py`: no pickle; the project modules it imports and its pinned requirements are
derived from its import graph by `mlops.pyfunc_bundle`, so it loads where only those requirements are
installed), registers it as a new version with provenance tags and points
the alias `candidate` at it. The same weights are never registered twice. Next to model.json the version
stores two tables: `reference.parquet` (a sample of training rows with the model's outputs on them as
the task's prediction columns: the drift reference) and `evaluation.parquet` (the test split's raw rows
with the encoded `label` of the task: 0/1, the class index or the target value; what `mlops promote`
scores this version and the env's current one on, so CI judges a promotion without DVC data). `fetch_model()`
downloads a version, checks its weights against the version's `weights_sha256` tag and places the files
atomically (the Helm chart's init container runs it).

Version tags (serving and deploy rely on these names): `git_sha`, `dvc_lock_md5`, `data_md5`,
`params_hash`, `gate` (passed|failed), `weights_sha256`, `metric.<name>` per test metric, and
`image.<name>` (server, fetch, monitor, pipeline) per image the release built and pushed with it, by
digest (`repository@sha256:...`): `mlops promote` writes them into the env's record and the chart deploys
them. A version registered without them (a local `make register`) is deployed with the images of the
env's values.yaml, and its record says so (`images: {}`).
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import urllib.parse
from pathlib import Path
from typing import Any

from mlops import artifact, files, pyfunc_bundle
from mlops.errors import ChecksumMismatch, ConfigError, MlopsError, ModelNotReady, PromotionRefused

log = logging.getLogger(__name__)

CANDIDATE_ALIAS = "candidate"
TAGS = ("git_sha", "dvc_lock_md5", "data_md5", "params_hash", "gate", "weights_sha256")
IMAGES = ("server", "fetch", "monitor", "pipeline")  # the images CI builds with a version: tags image.<name>
IMAGE_TAG = "image."
_DIGEST_REF = re.compile(r"^[a-z0-9]+(?:[._/:-][a-z0-9]+)*@sha256:[0-9a-f]{64}$")
REFERENCE = "reference.parquet"  # drift reference staged next to model.json (mlops.monitor.drift)
EVALUATION = "evaluation.parquet"  # labelled test rows staged next to model.json (mlops.compare)


# ---------------------------------------------------------------- helpers
def client():
    """An MlflowClient on the configured tracking/registry URI (MLFLOW_TRACKING_URI or embedded SQLite)."""
    import mlflow
    from mlflow import MlflowClient

    from mlops import tracking

    mlflow.set_tracking_uri(tracking.tracking_uri())
    return MlflowClient(tracking_uri=tracking.tracking_uri(), registry_uri=tracking.tracking_uri())


def _is_not_found(error: Exception) -> bool:
    code = getattr(error, "error_code", "")
    return (
        code in ("RESOURCE_DOES_NOT_EXIST", "NOT_FOUND", "INVALID_PARAMETER_VALUE")
        or "not found" in str(error).lower()
    )


def git_sha(cwd: Path | None = None) -> str:
    """The commit being built: `git rev-parse HEAD`, else the CI's variable, else `unknown`."""
    try:
        out = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=cwd, capture_output=True, text=True, timeout=30
        )
        if out.returncode == 0:
            return out.stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        pass
    return os.environ.get("CI_COMMIT_SHA") or os.environ.get("GITHUB_SHA") or "unknown"


def version_tags(
    meta: dict[str, Any], gate_verdict: str, metrics: dict[str, Any], dvc_lock: Path
) -> dict[str, str]:
    """The provenance tags of a model version (all values are strings, as MLflow stores them)."""
    tags = {
        "git_sha": git_sha(),
        "dvc_lock_md5": files.file_digest(dvc_lock, "md5") if dvc_lock.is_file() else "absent",
        "data_md5": str(meta.get("data_md5", "unknown")),
        "params_hash": str(meta.get("params_hash", "unknown")),
        "gate": gate_verdict,
        "weights_sha256": meta["weights"]["sha256"],
    }
    for name, value in metrics.items():
        if isinstance(value, int | float) and not isinstance(value, bool):
            tags[f"metric.{name}"] = f"{value:.6g}"
    return tags


def image_refs(pairs: dict[str, str]) -> dict[str, str]:
    """Check the images given to `register`: known names, each pinned by digest (`repo@sha256:<64 hex>`).

    Raises:
        ConfigError: an unknown image name or a reference without a sha256 digest (exit 2).
    """
    for key, ref in pairs.items():
        if key not in IMAGES:
            raise ConfigError(f"--image {key}=...: unknown image {key!r} (known: {', '.join(IMAGES)})")
        if not _DIGEST_REF.match(ref):
            raise ConfigError(
                f"--image {key}={ref}: expected repository@sha256:<64 hex digits> (pushed, by digest)"
            )
    return dict(sorted(pairs.items()))


def version_images(tags: dict[str, str]) -> dict[str, str]:
    """{name: repository@sha256:...} from a version's `image.<name>` tags ({} when it has none)."""
    return {k.removeprefix(IMAGE_TAG): v for k, v in sorted(tags.items()) if k.startswith(IMAGE_TAG)}


def _read_gate(gate_path: Path, sha256: str) -> str:
    """The gate verdict for these weights; refuses a missing report or one about other weights."""
    try:
        gate = json.loads(gate_path.read_text())
    except FileNotFoundError as e:
        raise PromotionRefused(f"{gate_path}: no gate report; run `mlops gate` first") from e
    except (OSError, ValueError) as e:
        raise PromotionRefused(f"{gate_path}: unreadable gate report ({e})") from e
    gated = gate.get("candidate", {}).get("sha256")
    if gated != sha256:
        raise PromotionRefused(
            f"{gate_path}: gate ran on weights {str(gated)[:12]}…, not on these ({sha256[:12]}…);"
            " rerun `mlops gate`"
        )
    return "passed" if gate.get("passed") is True else "failed"


def find_version(c: Any, name: str, sha256: str) -> Any | None:
    """The oldest version of `name` whose `weights_sha256` tag is `sha256`, or None."""
    found = c.search_model_versions(f"name = '{name}' and tags.weights_sha256 = '{sha256}'")
    return min(found, key=lambda v: int(v.version)) if found else None


# ---------------------------------------------------------------- register
def register(
    model_dir: Path,
    gate_path: Path,
    metrics_path: Path,
    dvc_lock: Path,
    experiment: str,
    name: str | None = None,
    allow_failed: bool = False,
    reference_from: tuple[Path, Path] | None = None,
    reference_rows: int = 5000,
    seed: int = 0,
    evaluation_from: tuple[Path, Path] | None = None,
    images: dict[str, str] | None = None,
) -> dict[str, Any]:
    """Register models/ as a new registry version tagged with its provenance; alias it `candidate`.

    Args:
        model_dir: models/ (weights verified against model.json first).
        gate_path: reports/gate.json of these weights.
        metrics_path: reports/metrics.json (test metrics become `metric.*` tags).
        dvc_lock: dvc.lock (its md5 is a tag; `absent` when missing).
        experiment: MLflow experiment of the logging run.
        name: registered model name (default: the name in model.json).
        allow_failed: register even when the gate failed (tagged `gate=failed`).
        reference_from: (raw table, encoded training split): a sample of at most `reference_rows`
            training rows (seeded by `seed`) is staged as reference.parquet next to model.json.
        evaluation_from: (raw table, encoded test split): the test rows' raw columns and encoded label
            are staged as evaluation.parquet (the rows `mlops promote` compares models on).
        images: {server|fetch|monitor|pipeline: repository@sha256:...}: the images built and pushed
            with this version, tagged `image.<name>`. Weights registered before get the new release's
            image tags (the newest build of the same model is the one deployed).

    Returns:
        {name, version, uri, gate, created, images}: created is False when these weights were already
        registered.

    Raises:
        ChecksumMismatch: the weights do not match model.json (exit 6).
        PromotionRefused: no gate report, a report about other weights, or a failed gate (exit 6).
    """
    from mlops import model as model_lib  # torch: only registering needs it (fetch-model's image has none)
    from mlops import tracking

    images = image_refs(images or {})
    model = model_lib.load(model_dir)  # verifies sha256 (tampered weights -> ChecksumMismatch)
    meta = model.metadata
    sha = meta["weights"]["sha256"]
    verdict = _read_gate(gate_path, sha)
    if verdict != "passed" and not allow_failed:
        raise PromotionRefused(
            f"{gate_path}: the gate did not pass; not registering (--allow-failed to override)"
        )
    name = name or meta["name"]
    try:
        metrics = json.loads(metrics_path.read_text())["test"]
    except (OSError, ValueError, KeyError) as e:
        raise ModelNotReady(f"{metrics_path}: test metrics unreadable ({e}); run `mlops evaluate`") from e

    from mlflow.exceptions import MlflowException

    reference = reference_sample(model, *reference_from, reference_rows, seed) if reference_from else None
    evaluation = evaluation_rows(model, *evaluation_from) if evaluation_from else None
    tags = version_tags(meta, verdict, metrics, dvc_lock) | {IMAGE_TAG + k: v for k, v in images.items()}
    try:
        return _publish(
            model_dir,
            meta,
            name,
            verdict,
            tags,
            experiment,
            reference=reference,
            evaluation=evaluation,
        )
    except MlflowException as e:
        raise RegistryUnavailable(f"registry {safe_uri(tracking.tracking_uri())}: {_short(e)}") from e


def reference_sample(model: Any, data: Path, train: Path, rows: int, seed: int) -> Any:
    """The drift reference: up to `rows` training rows' raw features and label column, and the model's
    outputs on them as the task's prediction columns (`Task.prediction_columns`: binary `probability`,
    multiclass `probability[<class>]` per class, regression `prediction`); prediction drift compares
    the logged outputs with these.

    Returns None (logged) when the raw table or the training split is missing: the version then has no
    reference and `mlops drift` needs one given explicitly.
    """
    from mlops import tables
    from mlops.errors import DataError

    meta = model.metadata
    try:
        frame = tables.split_rows(data, train, meta["id"])
    except DataError as e:
        log.warning("register: no drift reference staged (%s)", e)
        return None
    frame = frame.sample(n=min(rows, len(frame)), random_state=seed).sort_index()
    features = [f["name"] for f in meta["features"]]
    out = frame[[*features, meta["label"]["column"]]].reset_index(drop=True)
    outputs = model.predict_proba({n: out[n].to_numpy() for n in features})
    for name, values in model.task.prediction_columns(outputs).items():
        out[name] = values
    return out


def evaluation_rows(model: Any, data: Path, test: Path) -> Any:
    """The labelled test rows: the raw table's columns for every test-split row and its encoded `label`
    as featurize wrote it (mlops.task: 0/1 for binary, the class index for multiclass, the target value
    for regression).

    Every raw column is kept (not only this model's features), so a champion with other inputs can
    score the same rows. Returns None (logged) when the raw table or the test split is missing: the
    version then cannot be promoted over another (`mlops promote` refuses and says why).
    """
    from mlops import tables
    from mlops.errors import DataError

    try:
        rows = tables.split_rows(data, test, model.metadata["id"])
    except DataError as e:
        log.warning("register: no evaluation rows staged (%s); promote cannot compare this version", e)
        return None
    return rows.reset_index(drop=True)


def _publish(
    model_dir: Path,
    meta: dict[str, Any],
    name: str,
    verdict: str,
    tags: dict[str, str],
    experiment: str,
    reference: Any = None,
    evaluation: Any = None,
) -> dict[str, Any]:
    """Log + register a new version, or reuse the version holding the same weights; alias it `candidate`."""
    import mlflow

    from mlops import tracking

    sha = meta["weights"]["sha256"]
    c = client()
    existing = find_version(c, name, sha)
    if existing is not None:
        if existing.tags.get("gate") != verdict:  # same weights, newer gate verdict: the tag follows it
            c.set_model_version_tag(name, existing.version, "gate", verdict)
        for key, ref in tags.items():  # the newest release's images of these weights
            if key.startswith(IMAGE_TAG) and existing.tags.get(key) != ref:
                c.set_model_version_tag(name, existing.version, key, ref)
        c.set_registered_model_alias(name, CANDIDATE_ALIAS, existing.version)
        log.info("register: weights %s already registered as %s version %s", sha[:12], name, existing.version)
        return {
            "name": name,
            "version": str(existing.version),
            "uri": f"models:/{name}/{existing.version}",
            "gate": verdict,
            "created": False,
            "images": version_images({**existing.tags, **tags}),
        }

    tracking.configure(experiment)
    # MLflow prints "View run at ..." links on stdout, which is reserved for --json output
    with tempfile.TemporaryDirectory(prefix="mlops-register-") as tmp, contextlib.redirect_stdout(sys.stderr):
        staged = Path(tmp) / "model"
        staged.mkdir()
        for fname in artifact.file_names(meta):
            shutil.copy2(model_dir / fname, staged / fname)
        if reference is not None:
            files.write_parquet(staged / REFERENCE, reference)
        if evaluation is not None:
            files.write_parquet(staged / EVALUATION, evaluation)
        graph = pyfunc_bundle.import_graph()
        code = pyfunc_bundle.stage_code(Path(tmp) / "code", graph)
        with mlflow.start_run(run_name=f"register-{sha[:8]}"):
            mlflow.set_tags(tags)
            info = mlflow.pyfunc.log_model(
                name="model",
                python_model=str(pyfunc_bundle.ENTRY),
                artifacts={"model": str(staged)},
                code_paths=[str(code)],
                pip_requirements=pyfunc_bundle.requirements(graph.third_party),
                signature=pyfunc_bundle.signature(meta),
            )
        mv = mlflow.register_model(info.model_uri, name, tags=tags)
    c.set_registered_model_alias(name, CANDIDATE_ALIAS, mv.version)
    log.info(
        "register: %s version %s (gate %s, weights %s), alias %s",
        name,
        mv.version,
        verdict,
        sha[:12],
        CANDIDATE_ALIAS,
    )
    return {
        "name": name,
        "version": str(mv.version),
        "uri": f"models:/{name}/{mv.version}",
        "gate": verdict,
        "created": True,
        "images": version_images(tags),
    }


# ---------------------------------------------------------------- fetch
class RegistryUnavailable(MlopsError):
    """The registry did not answer or refused a request (the message carries no credentials): exit 5, like
    every other command that finds the registry down (fetch-model, promote, report)."""

    exit_code = 5
    http_status = 503


def _short(error: Exception) -> str:
    """The first line of an MLflow error without credentials (MLflow repeats the URI, user:password too)."""
    first = (str(error).strip().splitlines() or [type(error).__name__])[0]
    return re.sub(r"//[^/@\s]+@", "//", first)[:200]


def safe_uri(uri: str) -> str:
    """A tracking URI fit for messages: any user:password part is removed."""
    parts = urllib.parse.urlsplit(uri)
    if parts.username or parts.password:
        parts = parts._replace(netloc=parts.hostname + (f":{parts.port}" if parts.port else ""))
    return urllib.parse.urlunsplit(parts)


def _resolve(c: Any, name: str, version: str) -> Any:
    """A model version by number or alias; ModelNotReady (exit 5) if it is missing or no registry answers."""
    from mlops import tracking

    try:
        if version.isdigit():
            return c.get_model_version(name, version)
        return c.get_model_version_by_alias(name, version)
    except Exception as e:
        if _is_not_found(e):
            raise ModelNotReady(f"model {name!r} version {version!r}: not found in the registry") from e
        uri = safe_uri(tracking.tracking_uri())
        raise ModelNotReady(
            f"model {name!r} version {version!r}: registry {uri} unavailable ({_short(e)})"
        ) from e


def fetch_model(
    name: str, version: str, dest: Path, expected_sha256: str | None = None, evaluation: bool = False
) -> dict[str, Any]:
    """Download a registered version's model files into `dest`, verified against its `weights_sha256` tag.

    The version's drift reference (reference.parquet), when it has one, is placed next to model.json;
    so are its labelled test rows (evaluation.parquet) with `evaluation` (promote's comparison: the
    serving volume does without them).

    The files are downloaded and verified in a temp dir inside `dest`, then renamed into place, weights
    first and model.json last (model.json names the weights' sha256, so a reader never pairs new
    metadata with old weights). `dest` may be an existing mount point (an emptyDir volume).

    Args:
        name: registered model name.
        version: version number or alias (e.g. `production`).
        dest: target directory.
        expected_sha256: the weights' sha256 the caller was promised (the env's promotion record): the
            registry's tag must equal it, so a record and a re-tagged or replaced version never disagree.
        evaluation: also place evaluation.parquet (when the version has it).

    Returns:
        {name, version, sha256, dest}; also written to `dest/registry.json`.

    Raises:
        ModelNotReady: the version or its model files do not exist (exit 5).
        ChecksumMismatch: the weights differ from the tag or from model.json, or the tag is missing (exit 6).
    """
    c = client()
    mv = _resolve(c, name, str(version))
    expected = (mv.tags or {}).get("weights_sha256")
    if not expected:
        raise ChecksumMismatch(f"model {name!r} version {mv.version}: no weights_sha256 tag; cannot verify")
    if expected_sha256 and expected_sha256 != expected:
        raise ChecksumMismatch(
            f"model {name!r} version {mv.version}: registry weights_sha256 {expected} differs from the "
            f"expected {expected_sha256} (--sha256, the promotion record's)"
        )
    import mlflow

    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".fetch-", dir=dest) as tmp:
        try:
            local = Path(
                mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{name}/{mv.version}", dst_path=tmp)
            )
        except Exception as e:
            if _is_not_found(e):
                raise ModelNotReady(f"model {name!r} version {mv.version}: artifacts not found ({e})") from e
            raise
        found = sorted(local.rglob(artifact.METADATA))
        if not found:
            raise ModelNotReady(
                f"model {name!r} version {mv.version}: no {artifact.METADATA} in its artifacts"
            )
        src = found[0].parent
        try:
            meta, weights = artifact.verify(src)  # weights missing: exit 5; not those of model.json: 6
            served = [artifact.verify(src, "onnx")[1]] if meta.get("onnx") else []
        except (ModelNotReady, ChecksumMismatch) as e:
            raise type(e)(f"model {name!r} version {mv.version}: {e}") from e
        if meta["weights"]["sha256"] != expected:
            raise ChecksumMismatch(
                f"model {name!r} version {mv.version}: weights sha256 {meta['weights']['sha256'][:12]}… "
                f"does not match the registry tag weights_sha256 ({expected[:12]}…)"
            )
        for path in (weights, *served):  # the ONNX export: what `serve.backend: onnx` serves
            os.replace(path, dest / path.name)
        for table in (REFERENCE, EVALUATION) if evaluation else (REFERENCE,):
            if (src / table).is_file():
                os.replace(src / table, dest / table)
        os.replace(src / artifact.METADATA, dest / artifact.METADATA)
    result = {"name": name, "version": str(mv.version), "sha256": expected, "dest": str(dest)}
    files.write_json(dest / "registry.json", result)
    log.info("fetch-model: %s version %s (sha256 %s…) -> %s", name, mv.version, expected[:12], dest)
    return result
