"""compare: champion comparison, a candidate vs an environment's record, paired bootstrap on the same rows.

The model an environment runs is named by its promotion record (`deploy/envs/<env>/model.yaml`), which
changes with every promotion or rollback, so the comparison is no DVC stage (the pipeline depends only on
data, code and params). It runs when it matters, with the params.yaml `champion` section:

- at review time, `mlops report` compares models/ with production's record on the test split
  (`review()`), and shows the verdict;
- at promotion time, `mlops promote --env E` compares the version with E's record on the labelled test
  rows stored with the candidate version (`evaluation.parquet`, see `mlops.registry`), and refuses a
  regression (exit 6) before anything is written (`at_promotion()`).

Both models score the same rows; a seeded paired bootstrap (the same resampled rows for both, so the
noise they share cancels out) gives an interval on each difference candidate - champion. A metric fails
only when the regression is significant (the whole interval on the worse side of zero) AND its point
estimate exceeds `champion.max_regression`, so noise neither blocks nor passes a model by luck. The
champion is fetched from the registry and its weights checked against the record's sha256.
"""

from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mlops import paired_bootstrap
from mlops.errors import ChecksumMismatch, ConfigError, DataError, ModelNotReady, PromotionRefused
from mlops.labels import LABEL
from mlops.metrics import LOWER_IS_BETTER, TASK_METRICS, scores, task_scores
from mlops.params.champion import ChampionParams
from mlops.records import PromotionRecord, read_record
from mlops.task import Task

if TYPE_CHECKING:  # torch and pandas load only when models are scored
    import pandas as pd

    from mlops.scorer import Scorer

log = logging.getLogger(__name__)


def paired(
    params: ChampionParams,
    y: np.ndarray,
    p_cand: np.ndarray,
    t_cand: float,
    p_champ: np.ndarray,
    t_champ: float,
    bins: int,
    task: Task | None = None,
    top_k: int = 2,
) -> dict[str, Any]:
    """Compare two models' outputs on the same rows (every metric of their task, mlops.metrics).

    Args:
        params: the `champion` section.
        y: 0/1 labels; p_cand, p_champ: each model's positive-class probabilities on those rows.
        t_cand, t_champ: each model's decision threshold.
        bins: calibration bins (ece), params.yaml `evaluate.calibration_bins`.
        task: what both models predict (default binary); y and the outputs are that task's
            (class indices and [rows, N] probabilities for multiclass, values for regression).
        top_k: multiclass top_k_accuracy's k (`evaluate.top_k`).

    Returns:
        {passed, failed (metric names), rows, confidence, resamples, metrics}: `metrics` holds one row
        per metric (candidate, champion, diff); the compared ones (`max_regression`) add ci,
        significant, regression, bound and verdict (pass|fail).
    """
    boot = params.bootstrap
    kind = task.kind if task is not None else "binary"
    names = TASK_METRICS[kind]
    for name in params.max_regression:
        if name not in names:
            raise ConfigError(
                f"params.yaml: champion.max_regression.{name}: not a {kind} metric (schema.task: {kind} "
                f"has {', '.join(names)})"
            )
    compared = {m: (t_cand, t_champ) for m in params.max_regression}
    started = time.perf_counter()
    diffs = paired_bootstrap.paired_differences(
        y, p_cand, p_champ, compared, boot.samples, boot.seed, bins, top_k
    )
    log.info("compare: paired bootstrap, %d resamples, %.2fs", boot.samples, time.perf_counter() - started)
    if kind == "binary":
        s_cand, s_champ = scores(y, p_cand, t_cand, bins), scores(y, p_champ, t_champ, bins)
    else:
        s_cand, s_champ = (task_scores(task, y, p, bins, top_k) for p in (p_cand, p_champ))
    alpha = (1.0 - boot.confidence) / 2
    rows = []
    for name in [*params.max_regression, *(m for m in names if m not in params.max_regression)]:
        v_cand, v_champ = s_cand.get(name), s_champ.get(name)
        row: dict[str, Any] = {
            "metric": name,
            "candidate": v_cand,
            "champion": v_champ,
            "diff": None if v_cand is None or v_champ is None else v_cand - v_champ,
        }
        if name in params.max_regression:
            row.update(_verdict(name, row["diff"], diffs[name], params.max_regression[name], alpha))
        rows.append(row)
    failed = [r["metric"] for r in rows if r.get("verdict") == "fail"]
    return {
        "passed": not failed,
        "failed": failed,
        "rows": int(len(y)),
        "confidence": boot.confidence,
        "resamples": boot.samples,
        "metrics": rows,
    }


def _verdict(name: str, diff: float | None, resampled: np.ndarray, bound: float, alpha: float) -> dict:
    """The interval, significance and verdict of one compared metric."""
    if diff is None or not len(resampled):  # undefined on these rows (one class): nothing to judge
        return {"ci": None, "significant": False, "regression": None, "bound": bound, "verdict": "pass"}
    lo, hi = (float(q) for q in np.quantile(resampled, [alpha, 1 - alpha]))
    if name in LOWER_IS_BETTER:  # a regression is an increase
        regression, significant = diff, lo > 0
    else:  # a regression is a decrease
        regression, significant = -diff, hi < 0
    return {
        "ci": [lo, hi],
        "significant": bool(significant),
        "regression": regression,
        "bound": bound,
        "verdict": "fail" if significant and regression > bound else "pass",
    }


def fetch_champion(record: PromotionRecord, dest: Path, where: str) -> Scorer:
    """The model a record names, downloaded from the registry, its weights checked against the record.

    Args:
        where: the record's path, for messages.

    Raises:
        ModelNotReady: the registry does not answer or lacks the version (exit 5).
        ChecksumMismatch: the registry's weights are not the record's sha256 (exit 6).
    """
    from mlops import model as model_lib
    from mlops import registry

    try:
        registry.fetch_model(record.name, record.version, dest, expected_sha256=record.sha256)
    except (ModelNotReady, ChecksumMismatch) as e:
        raise type(e)(f"champion of {where}: {e}") from e
    return model_lib.load(dest)


def against(
    params: ChampionParams, bins: int, candidate: Scorer, rows: pd.DataFrame, champ: Scorer, top_k: int = 2
) -> dict[str, Any]:
    """`paired()` of two loaded models on labelled raw rows (feature columns + the encoded `LABEL`).

    Raises:
        ConfigError: the two models predict different things (tasks or classes), exit 2.
    """
    task = candidate.task
    if champ.task.kind != task.kind or champ.task.classes != task.classes:
        raise ConfigError(
            f"champion: {champ.name} is a {champ.task.kind} model over {list(champ.task.classes)}, the "
            f"candidate a {task.kind} model over {list(task.classes)}: their metrics do not compare "
            "(a new task starts without a champion: promote without one, see docs)"
        )
    y = rows[LABEL].to_numpy(dtype=np.float64 if task.kind == "regression" else int)
    return paired(
        params,
        y,
        candidate.predict_proba(rows),
        candidate.threshold,
        champ.predict_proba(rows),
        champ.threshold,
        bins,
        task,
        top_k,
    )


def champion_info(record: PromotionRecord, where: str | Path, env: str) -> dict[str, Any]:
    """What the result says about the champion: the record's identity and where it was read."""
    return {
        "env": env,
        "name": record.name,
        "version": record.version,
        "sha256": record.sha256,
        "record": str(where),
    }


def review(
    params: ChampionParams, bins: int, model_dir: Path, data: Path, test: Path, record_path: Path
) -> dict[str, Any] | None:
    """Review time: models/ vs the record's model on the test split (`mlops report`).

    Args:
        params: the `champion` section; bins: `evaluate.calibration_bins`.
        model_dir: the candidate (models/).
        data, test: the raw table and data/processed/test.parquet (the test rows, as evaluate scores them).
        record_path: deploy/envs/production/model.yaml.

    Returns:
        None when there is no record; else `paired()`'s result with `champion` (the record) added.

    Raises:
        ModelNotReady: no candidate model, or the registry does not answer (exit 5).
        DataError: the test rows are missing (exit 3): with a record, the comparison cannot be skipped.
        ChecksumMismatch: the registry's weights are not the record's (exit 6).
    """
    from mlops import model as model_lib
    from mlops.tables import split_rows

    record = read_record(record_path)
    if record is None:
        return None
    try:
        candidate = model_lib.load(model_dir)
    except ModelNotReady as e:
        raise ModelNotReady(
            f"champion comparison with {record_path}: {e} (the candidate: `dvc pull {model_dir}`)"
        ) from e
    try:
        rows = split_rows(data, test, candidate.metadata["id"])
    except DataError as e:
        raise DataError(
            f"champion comparison with {record_path}: {e} (the test rows: `dvc pull {data} {test}`)"
        ) from e
    with tempfile.TemporaryDirectory(prefix="mlops-champion-") as tmp:
        champ = fetch_champion(record, Path(tmp), str(record_path))
        try:
            result = against(params, bins, candidate, rows, champ)
        except DataError as e:
            raise DataError(f"champion of {record_path} cannot score the test rows: {e}") from e
    result["champion"] = champion_info(record, record_path, record_path.parent.name)
    log.info(
        "compare: %s vs %s version %s on %d rows: %s",
        model_dir,
        record.name,
        record.version,
        result["rows"],
        "passed" if result["passed"] else f"regression in {', '.join(result['failed'])}",
    )
    return result


def at_promotion(
    params: ChampionParams,
    bins: int,
    candidate_dir: Path,
    facts: dict[str, Any],
    record: PromotionRecord,
    record_path: Path,
    env: str,
) -> dict[str, Any]:
    """Promotion time: a fetched registry version vs the env's current record (`mlops promote`).

    Both models score the candidate version's own labelled test rows (`evaluation.parquet`, stored with
    it by `mlops register`), so CI needs no DVC data to judge a promotion.

    Args:
        candidate_dir: the candidate version's files, fetched and verified (model.json, weights,
            evaluation.parquet).
        facts: the candidate's {name, version, ...} (messages).
        record: the env's current record; record_path: where it was read.

    Returns:
        `paired()`'s result with `champion` (the record) added.

    Raises:
        PromotionRefused: the candidate has no evaluation rows, or a model cannot score them (exit 6).
        ModelNotReady, ChecksumMismatch: the record's model cannot be fetched or verified (exit 5, 6).
    """
    from mlops import model as model_lib
    from mlops import registry, tables

    where = f"model {facts['name']!r} version {facts['version']}"
    rows_path = candidate_dir / registry.EVALUATION
    if not rows_path.is_file():
        raise PromotionRefused(
            f"{where} has no {registry.EVALUATION} (its labelled test rows), so it cannot be compared "
            f"with {env}'s {record.name} version {record.version} ({record_path}); register it again with "
            f"the raw table and the test split present (`mlops register --data ... --test ...`)"
        )
    rows = tables.read_table(rows_path)
    candidate = model_lib.load(candidate_dir)
    with tempfile.TemporaryDirectory(prefix="mlops-champion-") as tmp:
        champ = fetch_champion(record, Path(tmp), str(record_path))
        try:
            result = against(params, bins, candidate, rows, champ)
        except DataError as e:
            raise PromotionRefused(
                f"{where} vs {env}'s {record.name} version {record.version}: the models cannot score the "
                f"same rows ({e})"
            ) from e
    result["champion"] = champion_info(record, record_path, env)
    log.info(
        "promote: %s vs %s's %s version %s on %d rows: %s",
        where,
        env,
        record.name,
        record.version,
        result["rows"],
        "no significant regression" if result["passed"] else f"regression in {', '.join(result['failed'])}",
    )
    return result


def refusal(result: dict[str, Any], candidate: str) -> str:
    """The one-line reason a promotion is refused: per failed metric, the candidate's and the champion's
    value, the point difference, the interval and the bound."""
    champ = result["champion"]
    parts = []
    for r in (r for r in result["metrics"] if r.get("verdict") == "fail"):
        lo, hi = r["ci"]
        parts.append(
            f"{r['metric']} {r['candidate']:.4f} vs {r['champion']:.4f}: Δ {r['diff']:+.4f}, "
            f"{result['confidence']:.0%} CI [{lo:+.4f}, {hi:+.4f}] (significant), regression "
            f"{r['regression']:.4f} > bound {r['bound']:g} (champion.max_regression.{r['metric']})"
        )
    return (
        f"{candidate} regresses against {champ['env']}'s {champ['name']} version {champ['version']} "
        f"on the same {result['rows']} rows: " + "; ".join(parts)
    )


def _f(v: Any, sign: bool = False) -> str:
    if v is None:
        return "–"
    return f"{v:+.4f}" if sign else f"{v:.4f}"


def markdown(result: dict[str, Any] | None, record_path: Path) -> list[str]:
    """The comparison as markdown lines (the review report's champion section)."""
    if result is None:
        return [
            f"No promotion record at `{record_path}`: no model runs in production yet, so there is no "
            "champion to compare with; only the gate's absolute rules apply."
        ]
    champ = result["champion"]
    confidence = f"{result['confidence']:.0%}"
    lines = [
        f"Champion: `{champ['name']}` version {champ['version']} (sha256 `{champ['sha256'][:12]}`), "
        f"from `{champ['record']}`, fetched from the registry and verified.",
        f"Both models scored on the same {result['rows']} test rows; paired bootstrap, "
        f"{result['resamples']} resamples, {confidence} interval on candidate − champion.",
        "",
        f"| metric | champion | candidate | Δ | {confidence} CI | bound | verdict |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in result["metrics"]:
        if "verdict" in r:
            ci = "–" if r["ci"] is None else f"[{r['ci'][0]:+.4f}, {r['ci'][1]:+.4f}]"
            bound = f"regression ≤ {r['bound']:g} unless not significant"
            mark = "✅ pass" if r["verdict"] == "pass" else "❌ significant regression"
        else:
            ci, bound, mark = "–", "–", "not compared"
        lines.append(
            f"| {r['metric']} | {_f(r['champion'])} | {_f(r['candidate'])} | {_f(r['diff'], True)} "
            f"| {ci} | {bound} | {mark} |"
        )
    env = champ["env"]
    lines.append("")
    if result["passed"]:
        lines.append(
            f"**Champion comparison: ✅ no significant regression**: `mlops promote --env {env}` would "
            "accept this candidate against the current record."
        )
    else:
        lines.append(
            f"**Champion comparison: ❌ significant regression in {', '.join(result['failed'])}**: "
            f"`mlops promote --env {env}` will refuse this candidate (exit 6) while this record runs."
        )
    return lines
