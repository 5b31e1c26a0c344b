"""report: pipeline outputs -> one markdown review document (+ PNG plots) for a merge request.

Sections: gate verdict and table (reports/gate.json), whether CI reproduced the committed dvc.lock
(reports/lock-check.json, `mlops lock-check`), metrics of this branch vs the target branch
(`dvc metrics diff`), the champion comparison, params diff (`dvc params diff`), slice table, plots
rendered as PNG files next to the report (CI uploads them as artifacts; the markdown references them by
relative path), and a short model card. `mlops report --post` hands the document to
`mlops.review_comment`, which keeps ONE comment per merge request.

The tables follow the task of reports/metrics.json (`task`; absent: binary, mlops.task):

- binary: slices with size, positive rate, ROC AUC, log loss and F1; plots roc, pr, calibration, confusion;
- multiclass: the test metrics (accuracy, macro and weighted F1, log loss, top-k accuracy, ECE), a
  per-class table (precision, recall, F1, rows) and slices with accuracy, F1, log loss and class shares;
  plots roc (one-vs-rest, a curve per class), calibration (top label), confusion (N x N, class order);
- regression: the test metrics (RMSE, MAE, R², MAPE, in the target's units) and slices with size, mean
  target and the same metrics; plots predicted (against actual) and residuals (against predicted).

The champion comparison runs here, at review time, against production's record of that moment
(`mlops.compare.review`: the champion is fetched from the registry and verified, both models score the
same test rows, paired bootstrap). With a record, the registry and the test rows are required (an error
names what is missing, never a silent skip); with none, the report says so. Its verdict is shown in the
title and the section, and does not change the exit code: the report documents, the gate blocks the
merge on the absolute rules, and `mlops promote` enforces the comparison (exit 6) against the target
env's record at promotion time, when the record that matters is known.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlops import artifact, files, lockcheck
from mlops import compare as compare_lib
from mlops.errors import DataError, ModelNotReady
from mlops.review_comment import MARKER
from mlops.stages import gate as gate_lib
from mlops.task import BINARY, MULTICLASS, REGRESSION, Task

if TYPE_CHECKING:
    from mlops.params.champion import ChampionParams

log = logging.getLogger(__name__)

SLICE_COLUMNS = ("rows", "positive_rate", "roc_auc", "log_loss", "f1")
"""The binary slice table's columns."""
TASK_SLICE_COLUMNS = {
    BINARY: SLICE_COLUMNS,
    MULTICLASS: ("rows", "accuracy", "macro_f1", "weighted_f1", "log_loss"),
    REGRESSION: ("rows", "mean_target", "rmse", "mae", "r2", "mape"),
}
"""Each task's slice columns (multiclass adds the slice's class shares)."""
TEST_METRICS = {
    MULTICLASS: ("rows", "accuracy", "macro_f1", "weighted_f1", "log_loss", "top_k_accuracy", "ece"),
    REGRESSION: ("rows", "rmse", "mae", "r2", "mape", "mean_target"),
}
"""The test metrics table of the other tasks (binary's metrics are in the metrics diff)."""
METRIC_NAMES = {
    "rows": "rows",
    "accuracy": "accuracy",
    "macro_f1": "macro F1",
    "weighted_f1": "weighted F1",
    "log_loss": "log loss",
    "top_k_accuracy": "top-k accuracy",
    "ece": "ECE (top label)",
    "rmse": "RMSE",
    "mae": "MAE",
    "r2": "R²",
    "mape": "MAPE",
    "mean_target": "mean target",
}
PER_CLASS_COLUMNS = ("precision", "recall", "f1", "rows")
PLOTS = {
    "roc": ("ROC", "fpr", "tpr"),
    "pr": ("Precision-recall", "recall", "precision"),
    "calibration": ("Calibration", "mean_predicted", "fraction_positive"),
}
SCATTERS = {
    "predicted": ("Predicted vs actual", "actual", "predicted"),
    "residuals": ("Residuals", "predicted", "residual"),
}
"""Regression plots: scatter plots in the target's units."""


@dataclass(frozen=True)
class Comparison:
    """What the champion comparison needs: params.yaml `champion`, `evaluate.calibration_bins`, and the
    raw table and test split whose rows both models score."""

    params: ChampionParams
    bins: int
    data: Path
    test: Path


def target_branch(env: dict[str, str] | os._Environ = os.environ) -> str:
    """The merge target to diff against: from the CI's variables, else `main`."""
    for var in ("GITHUB_BASE_REF", "CI_MERGE_REQUEST_TARGET_BRANCH_NAME", "CHANGE_TARGET"):
        if env.get(var):
            return f"origin/{env[var]}"
    return "main"


def start_dvc_diff(kind: str, target: str, repo: Path) -> subprocess.Popen[str] | str:
    """Start `dvc metrics|params diff --json <target>` (target vs the workspace) in the background, or
    return why it cannot start. `collect_dvc_diff` waits for it: the two diffs (a DVC start-up and a
    read of the target revision each) run alongside each other and the plot rendering."""
    cmd = [sys.executable, "-m", "dvc", kind, "diff", "--json", target]
    try:
        return subprocess.Popen(
            cmd,
            cwd=repo,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env={**os.environ, "DVC_NO_ANALYTICS": "1"},
        )
    except OSError as e:
        return f"`dvc {kind} diff` did not run ({e})"


def collect_dvc_diff(
    kind: str, target: str, proc: subprocess.Popen[str] | str
) -> tuple[dict[str, Any] | None, str]:
    """Wait for a diff `start_dvc_diff` started; its JSON, or (None, why) when unavailable."""
    if isinstance(proc, str):
        return None, proc
    try:
        stdout, stderr = proc.communicate(timeout=300)
    except subprocess.TimeoutExpired as e:
        proc.kill()
        proc.communicate()
        return None, f"`dvc {kind} diff` did not run ({e})"
    if proc.returncode != 0:
        last = (stderr.strip().splitlines() or ["no output"])[-1]
        return None, f"`dvc {kind} diff {target}` failed: {last}"
    try:
        return json.loads(stdout or "{}"), ""
    except ValueError:
        return None, f"`dvc {kind} diff` printed no JSON"


def _f(v: Any) -> str:
    if isinstance(v, bool) or v is None:
        return "–" if v is None else str(v)
    if isinstance(v, float):
        return f"{v:.4f}"
    return str(v)


def diff_table(diff: dict[str, Any], head: str) -> list[str]:
    """Rows `| key | old | new | diff |` of a dvc diff (only changed or new keys for params)."""
    rows = [f"| {head} | target | this branch | change |", "|---|---|---|---|"]
    for path, entries in sorted(diff.items()):
        for key, e in sorted(entries.items()):
            change = e.get("diff")
            rows.append(
                f"| `{key}` ({path}) | {_f(e.get('old'))} | {_f(e.get('new'))} | "
                f"{f'{change:+.4f}' if isinstance(change, float) else _f(change)} |"
            )
    return rows if len(rows) > 2 else ["_no differences_"]


def slice_table(
    slices: dict[str, dict[str, dict[str, Any]]],
    task: str = BINARY,
    classes: list[str] | tuple[str, ...] = (),
) -> list[str]:
    """One row per slice: size, the target's summary (positive rate, mean target, class shares: in the
    order of `classes` when given) and the task's main metrics (a slice under `evaluate.min_slice_rows`
    has only its size and target summary)."""
    columns = TASK_SLICE_COLUMNS[task]
    head = list(columns) + (["class shares"] if task == MULTICLASS else [])
    lines = ["| slice | " + " | ".join(head) + " |", "|---" * (len(head) + 1) + "|"]
    for group, values in slices.items():
        for key, s in values.items():
            if task == REGRESSION and "mean_target" not in s:  # a small slice: Task.target_summary
                s = {**s, "mean_target": s.get("mean")}
            cells = [_f(s.get(c)) for c in columns]
            if task == MULTICLASS:
                shares = s.get("class_rates") or {}
                order = [c for c in classes if c in shares] + [c for c in shares if c not in classes]
                cells.append(" · ".join(f"{c} {shares[c]:.2f}" for c in order) or "–")
            lines.append(f"| {group}={key} | " + " | ".join(cells) + " |")
    return lines


def metrics_table(test: dict[str, Any], task: str) -> list[str]:
    """The test metrics of a multiclass or regression model, one row each."""
    lines = ["| metric | test |", "|---|---|"]
    for name in TEST_METRICS[task]:
        label = METRIC_NAMES[name]
        if name == "top_k_accuracy" and test.get("top_k") is not None:
            label = f"top-{test['top_k']} accuracy"
        lines.append(f"| {label} | {_f(test.get(name))} |")
    return lines


def per_class_table(
    per_class: dict[str, dict[str, Any]], classes: list[str] | tuple[str, ...] = ()
) -> list[str]:
    """Precision, recall, F1 and test rows of each class (in the model's class order when given)."""
    order = [c for c in classes if c in per_class] + [c for c in per_class if c not in classes]
    lines = ["| class | precision | recall | F1 | rows |", "|---|---|---|---|---|"]
    for name in order:
        s = per_class[name]
        lines.append(f"| {name} | " + " | ".join(_f(s.get(c)) for c in PER_CLASS_COLUMNS) + " |")
    return lines


def render_plots(
    plots_dir: Path, out_dir: Path, task: str = BINARY, classes: list[str] | tuple[str, ...] = ()
) -> list[Path]:
    """The plot files evaluate wrote for the task as PNG files: ROC, PR, calibration and confusion
    matrix (classification: a ROC curve per class and the classes in model order for multiclass),
    predicted vs actual and residuals (regression)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    written = []
    for name, (title, x, y) in PLOTS.items():
        src = plots_dir / f"{name}.json"
        if not src.is_file():
            continue
        points = json.loads(src.read_text())
        fig, ax = plt.subplots(figsize=(4, 4), dpi=100)
        if task == MULTICLASS and name == "roc":  # one-vs-rest: one curve per class
            for c in _classes_of(points, "class", classes):
                curve = [p for p in points if p.get("class") == c]
                ax.plot([p[x] for p in curve], [p[y] for p in curve], label=str(c))
            ax.legend(fontsize="small", loc="lower right")
            title = "ROC (one-vs-rest)"
        else:
            ax.plot([p[x] for p in points], [p[y] for p in points])
            if task == MULTICLASS and name == "calibration":
                title, y = "Calibration (top label)", "accuracy"
        if name in ("roc", "calibration"):
            ax.plot([0, 1], [0, 1], linestyle="--", color="grey", linewidth=0.8)
        ax.set(
            title=title, xlabel=x.replace("_", " "), ylabel=y.replace("_", " "), xlim=(0, 1), ylim=(0, 1.02)
        )
        written.append(_save(fig, out_dir / f"{name}.png"))
        plt.close(fig)
    src = plots_dir / "confusion.json"
    if src.is_file():
        rows = json.loads(src.read_text())
        labels = sorted({r["actual"] for r in rows} | {r["predicted"] for r in rows})
        if task == MULTICLASS:
            labels = [c for c in classes if c in labels] + [c for c in labels if c not in classes]
        counts = [
            [sum(1 for r in rows if r["actual"] == a and r["predicted"] == p) for p in labels] for a in labels
        ]
        fig, ax = plt.subplots(figsize=(4, 4), dpi=100)
        ax.imshow(counts, cmap="Blues")
        top = max(max(row) for row in counts)
        for i, row in enumerate(counts):
            for j, c in enumerate(row):
                ax.text(j, i, str(c), ha="center", va="center", color="white" if c > top / 2 else "black")
        ax.set(
            title="Confusion matrix",
            xlabel="predicted",
            ylabel="actual",
            xticks=range(len(labels)),
            yticks=range(len(labels)),
            xticklabels=labels,
            yticklabels=labels,
        )
        written.append(_save(fig, out_dir / "confusion.png"))
        plt.close(fig)
    for name, (title, x, y) in SCATTERS.items():
        src = plots_dir / f"{name}.json"
        if not src.is_file():
            continue
        points = json.loads(src.read_text())
        xs, ys = [p[x] for p in points], [p[y] for p in points]
        fig, ax = plt.subplots(figsize=(4, 4), dpi=100)
        ax.scatter(xs, ys, s=4, alpha=0.3, linewidths=0)
        if name == "predicted" and xs:  # a perfect model lies on the diagonal
            lo, hi = min(min(xs), min(ys)), max(max(xs), max(ys))
            ax.plot([lo, hi], [lo, hi], linestyle="--", color="grey", linewidth=0.8)
        else:
            ax.axhline(0, linestyle="--", color="grey", linewidth=0.8)
        ax.set(title=title, xlabel=x, ylabel=y)
        written.append(_save(fig, out_dir / f"{name}.png"))
        plt.close(fig)
    return written


def _classes_of(points: list[dict[str, Any]], key: str, classes: list[str] | tuple[str, ...]) -> list[Any]:
    """The classes the points name, in model order first."""
    seen = list(dict.fromkeys(p.get(key) for p in points))
    return [c for c in classes if c in seen] + [c for c in seen if c not in classes]


def _save(fig: Any, target: Path) -> Path:
    with files.atomic_path(target) as tmp:
        fig.savefig(tmp, format="png", bbox_inches="tight")
    return target


def model_card(meta: dict[str, Any], train_params: dict[str, Any], card: dict[str, str]) -> list[str]:
    """A short model card: identity and task (binary: the decision threshold; multiclass: the classes;
    regression: the target), data and params hashes, training, and intended use and limits from
    params.yaml `model_card` (`card`)."""
    arch = meta.get("architecture", {})
    training = meta.get("training", {})
    layers = "→".join(map(str, arch.get("hidden", [])))
    task = Task.from_metadata(meta)
    net = f"MLP {arch.get('input_dim')}→{layers}→{task.output_dim} ({arch.get('activation')})"
    if task.kind == MULTICLASS:
        what = f"multiclass `{task.column}` ({', '.join(task.classes)}; predicted: the most probable class)"
    elif task.kind == REGRESSION:
        what = f"regression of `{task.column}` (predicted in the target's units)"
    else:
        what = f"decision threshold {meta.get('decision_threshold')}"
    return [
        f"- **Model**: `{meta['name']}`, {net}, {what}",
        f"- **Weights sha256**: `{meta['weights']['sha256']}`",
        f"- **Data md5**: `{meta.get('data_md5')}` · **params hash**: `{meta.get('params_hash')}`",
        f"- **Training**: {training.get('train_rows')} rows, {training.get('epochs_run')} epochs "
        f"(best {training.get('best_epoch')}); params: "
        + ", ".join(
            f"{k}={json.dumps(v)}" for k, v in train_params.items() if k not in ("experiment", "tensorboard")
        ),
        f"- **Intended use**: {card['intended_use']}",
        f"- **Limits**: {card['limits']}",
    ]


def build(
    gate_path: Path,
    metrics_path: Path,
    plots_dir: Path,
    model_dir: Path,
    champion_record: Path,
    out: Path,
    train_params: dict[str, Any],
    target: str,
    repo: Path,
    card: dict[str, str],
    *,
    comparison: Comparison,
) -> str:
    """Write the review report (and its PNG plots under `<out dir>/plots/`); return the markdown.

    Args:
        gate_path: reports/gate.json (the report says so when it is missing).
        metrics_path: reports/metrics.json; plots_dir: reports/plots (evaluate's plot data).
        model_dir: models/ (model card); champion_record: deploy/envs/production/model.yaml.
        out: the markdown file to write (e.g. reports/review/report.md).
        train_params: the `train` params section (model card).
        card: the `model_card` params section (intended use and limits).
        target: git revision of the merge target for `dvc metrics|params diff`.
        repo: the DVC repository root (where dvc runs).
        comparison: the champion comparison's params and test rows.

    Raises:
        ModelNotReady, DataError, ChecksumMismatch: a record exists and the comparison cannot run
            (registry, candidate model or test rows missing; registry weights not the record's).
    """
    diffs = {kind: start_dvc_diff(kind, target, repo) for kind in ("metrics", "params")}
    try:
        return _compose(
            gate_path,
            metrics_path,
            plots_dir,
            model_dir,
            champion_record,
            out,
            train_params,
            target,
            card,
            diffs,
            comparison,
        )
    finally:  # an error on the way leaves no dvc process behind
        for proc in diffs.values():
            if not isinstance(proc, str) and proc.poll() is None:
                proc.kill()
                proc.communicate()


def _compose(
    gate_path: Path,
    metrics_path: Path,
    plots_dir: Path,
    model_dir: Path,
    champion_record: Path,
    out: Path,
    train_params: dict[str, Any],
    target: str,
    card: dict[str, str],
    diffs: dict[str, subprocess.Popen[str] | str],
    comparison: Comparison,
) -> str:
    try:
        metrics = json.loads(metrics_path.read_text())
    except (OSError, ValueError) as e:
        raise DataError(f"{metrics_path}: unreadable metrics ({e}); run `mlops evaluate` first") from e
    try:
        meta: dict[str, Any] | None = artifact.read_metadata(model_dir)
    except ModelNotReady as e:  # e.g. a CI job that received only reports/: the card says so
        log.warning("report: %s", e)
        meta = None
    gate = json.loads(gate_path.read_text()) if gate_path.is_file() else None
    champ = compare_lib.review(
        comparison.params, comparison.bins, model_dir, comparison.data, comparison.test, champion_record
    )
    verdict = "not run" if gate is None else ("✅ passed" if gate["passed"] else "❌ failed")
    name = meta["name"] if meta else (gate or {}).get("candidate", {}).get("name", "model")
    title = f"## Model review: `{name}` · gate {verdict}"
    if champ is None:
        title += " · champion: none in production"
    elif champ["passed"]:
        title += " · champion ✅ no significant regression"
    else:
        title += f" · champion ❌ significant regression ({', '.join(champ['failed'])}): promotion would be refused"
    check_path = gate_path.parent / "lock-check.json"  # CI's train job: `mlops lock-check`
    check = json.loads(check_path.read_text()) if check_path.is_file() else None
    if check is not None:
        title += f" · dvc.lock {check['verdict']}"
    lines = [MARKER, title, ""]

    lines += ["### Gate", ""]
    lines += [gate_lib.markdown(gate).split("\n", 2)[2] if gate else f"_no gate report at {gate_path}_", ""]

    if check is not None:
        lines += lockcheck.markdown(check).splitlines() + [""]
    else:
        lines += ["### Reproducibility", "", f"_not checked: no {check_path} (CI's train job writes it)_", ""]

    task = metrics.get("task", BINARY)
    classes = Task.from_metadata(meta).classes if meta else ()
    lines += [f"### Metrics vs target branch `{target}`", ""]
    plots = render_plots(plots_dir, out.parent / "plots", task, classes)  # while the diffs run
    diff, why = collect_dvc_diff("metrics", target, diffs["metrics"])
    lines += diff_table(diff, "metric") if diff is not None else [f"_not available: {why}_"]
    if task != BINARY:
        test = metrics.get("test", {})
        lines += ["", f"### Test metrics ({task})", ""] + metrics_table(test, task)
        if task == MULTICLASS:
            lines += ["", "### Per class (test)", ""] + per_class_table(test.get("per_class", {}), classes)

    lines += ["", "### Champion comparison (production, at review time)", ""]
    lines += compare_lib.markdown(champ, champion_record)

    lines += ["", f"### Params diff vs `{target}`", ""]
    diff, why = collect_dvc_diff("params", target, diffs["params"])
    lines += diff_table(diff, "param") if diff is not None else [f"_not available: {why}_"]

    lines += ["", "### Slices", ""]
    lines += slice_table(metrics.get("slices", {}), task, classes)

    lines += ["", "### Plots", "", "PNG files attached to the CI job as artifacts:", ""]
    lines += [f"- [{p.stem}](plots/{p.name})" for p in plots] or ["_no plot data_"]

    lines += ["", "### Model card", ""]
    lines += model_card(meta, train_params, card) if meta else [f"_{model_dir}/model.json not available_"]
    text = "\n".join(lines) + "\n"
    files.write_bytes(out, text.encode())
    log.info(
        "report: %s (%d plots, champion %s)",
        out,
        len(plots),
        "none" if champ is None else ("passed" if champ["passed"] else "regression"),
    )
    return text
