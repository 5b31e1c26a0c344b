"""gate: candidate model + metrics -> reports/gate.json and reports/gate.md; exit 4 on failure.

The gate holds the absolute rules only, so the stage depends on data, code and params alone (nothing
under deploy/, no registry). Rules (all from `params.yaml: gate`; each rule id is the params key it
comes from):
- `metrics.min.<m>` / `metrics.max.<m>`: absolute bounds on the test metrics in reports/metrics.json;
- `classes.min.<m>[<class>]` (multiclass): a minimum precision, recall or F1 for every class;
- `slices.min.<m>[<slice>=<value>]`: a minimum in every evaluated slice that has metrics;
Metric names are the model's task's (mlops.metrics.TASK_METRICS); a bound on another task's metric
(`roc_auc` on a regression model) stops the gate with exit 2 naming the key.
- `onnx_parity.max_abs_diff`: with `serve.backend: onnx`, max |p_onnx - p_torch| over the test rows
  and outputs (regression: divided by the target's std, so the bound does not depend on its units)
  (the ONNX export on ONNX Runtime vs the safetensors weights on torch) must stay within the bound, so
  the served file scores as the network that evaluate measured (skipped with `serve.backend: torch`);
- `latency.p95_ms_single` / `latency.p95_ms_batch`: CPU p95 of one prediction through the full
  raw-columns path on the served backend (ONNX Runtime, or torch); a budget missed on the first
  measurement is measured once more (a noisy runner gets a second chance; a slow model fails twice);
  `max_model_bytes`: size of the model files (weights, ONNX export, model.json).

The comparison with the model production runs (the champion) is not a gate rule: its record changes
with every promotion, so it runs when it matters, in `mlops report` and `mlops promote` (`mlops.compare`).

gate.json and gate.md are DVC outputs whose hashes land in dvc.lock, so they hold only what the same
inputs reproduce on any machine: verdicts, bounds and deterministic values. The measured latencies
are machine-dependent: they go to the untracked timings file (`--timings`, git-ignored, not a DVC
output) and the log, never into a tracked hash. So does the exact parity figure (float32 rounding
differs by CPU kernel); gate.json carries it rounded up to a power of ten.
"""

from __future__ import annotations

import argparse
import json
import logging
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from mlops import artifact, files, scorer
from mlops.errors import DataError, GateFailed
from mlops.params.base import Section, Sections
from mlops.params.gate import GateParams
from mlops.params.served import ServedBackend
from mlops.paths import add_paths

if TYPE_CHECKING:  # torch and pandas load in run(): `mlops report` renders markdown() without them
    from mlops import model as model_lib

log = logging.getLogger(__name__)


def rule(
    rule_id: str, kind: str, value: Any, bound: Any, op: str, passed: bool | None, **extra: Any
) -> dict[str, Any]:
    """One gate rule row: verdict `pass`, `fail` or `skip` (passed None: not applicable)."""
    verdict = "skip" if passed is None else ("pass" if passed else "fail")
    return {
        "id": rule_id,
        "kind": kind,
        "value": value,
        "bound": bound,
        "op": op,
        "verdict": verdict,
        **extra,
    }


def absolute_rules(params: GateParams, test: dict[str, Any]) -> list[dict[str, Any]]:
    """`metrics.min.*` and `metrics.max.*` on the test metrics (a missing metric fails its rule)."""
    out = []
    for name, bound in params.metrics.min.items():
        v = test.get(name)
        out.append(rule(f"metrics.min.{name}", "absolute", v, bound, ">=", v is not None and v >= bound))
    for name, bound in params.metrics.max.items():
        v = test.get(name)
        out.append(rule(f"metrics.max.{name}", "absolute", v, bound, "<=", v is not None and v <= bound))
    return out


def slice_rules(params: GateParams, slices: dict[str, dict[str, dict[str, Any]]]) -> list[dict[str, Any]]:
    """`slices.min.*` in every slice; slices too small for metrics (or with one class) are skipped."""
    out = []
    for name, bound in params.slices.min.items():
        for group, values in slices.items():
            for key, s in values.items():
                v = s.get(name)
                out.append(
                    rule(
                        f"slices.min.{name}[{group}={key}]",
                        "slice",
                        v,
                        bound,
                        ">=",
                        None if v is None else v >= bound,
                        rows=s.get("rows"),
                    )
                )
    return out


def class_rules(params: GateParams, test: dict[str, Any]) -> list[dict[str, Any]]:
    """`classes.min.*` (multiclass): a floor on each class's precision, recall or F1 on the test split."""
    out = []
    for name, bound in params.classes.min.items():
        for cls, values in test.get("per_class", {}).items():
            v = values.get(name)
            out.append(
                rule(
                    f"classes.min.{name}[{cls}]",
                    "class",
                    v,
                    bound,
                    ">=",
                    v is not None and v >= bound,
                    rows=values.get("rows"),
                )
            )
    return out


def _p95_ms(call: Callable[[], Any], repeats: int, warmup: int) -> float:
    for _ in range(warmup):
        call()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        call()
        times.append(time.perf_counter() - t0)
    return float(np.percentile(times, 95) * 1000.0)


def measure(call: Callable[[], Any], budget_ms: float, repeats: int, warmup: int) -> tuple[bool, list[float]]:
    """p95 latency of `call` against its budget, measured a second time only when the first misses.

    Returns:
        (within budget, the p95 of each measurement in ms).
    """
    first = _p95_ms(call, repeats, warmup)
    if first <= budget_ms:
        return True, [first]
    log.warning("gate: p95 %.3f ms over the %.3f ms budget; measuring once more", first, budget_ms)
    second = _p95_ms(call, repeats, warmup)
    return second <= budget_ms, [first, second]


def parity_rule(
    params: GateParams, backend: str, p_torch: np.ndarray, served: scorer.Scorer | None, rows: Any
) -> tuple[dict[str, Any], float | None]:
    """`onnx_parity.max_abs_diff`: the served ONNX export against the torch network on the test rows.

    Returns:
        (the rule, its value rounded up to a power of ten; the exact max |p_onnx - p_torch| or None).
    """
    rid, bound = "onnx_parity.max_abs_diff", params.onnx_parity.max_abs_diff
    if backend != "onnx":
        return rule(rid, "parity", None, bound, "<=", None, backend=backend), None
    if served is None:  # no ONNX export to serve: the server would refuse to start
        return rule(rid, "parity", None, bound, "<=", False, backend=backend), None
    diff = float(np.max(np.abs(served.predict_proba(rows) - p_torch))) if len(rows) else 0.0
    scale = (served.metadata.get("label", {}).get("scale") or {}).get("std")
    if scale:  # regression: in units of the target's std, as the network computes (float32 rounding)
        diff /= float(scale)
    shown = 10.0 ** math.ceil(math.log10(diff)) if diff > 0 else 0.0
    return rule(rid, "parity", shown, bound, "<=", diff <= bound, backend=backend), diff


def budget_rules(
    params: GateParams, model: scorer.Scorer, rows: Any, model_dir: Path
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """Latency (p95 single row and batch, through raw columns as served) and model size budgets.

    Args:
        model: the model on the served backend (its threads set to `gate.latency.threads`).

    Returns:
        (the rules, with no measured value in them: only verdict and bound; the measured timings).
    """
    lat = params.latency
    names = model.preprocessor.inputs
    single = {c: rows[c].iloc[:1].tolist() for c in names}
    batch_frame = rows.sample(n=lat.batch_rows, replace=len(rows) < lat.batch_rows, random_state=0)
    batch = {c: batch_frame[c].tolist() for c in names}
    ok_single, single_ms = measure(
        lambda: model.predict_proba(single), lat.p95_ms_single, lat.repeats, lat.warmup
    )
    ok_batch, batch_ms = measure(
        lambda: model.predict_proba(batch), lat.p95_ms_batch, lat.repeats, lat.warmup
    )
    size = sum((model_dir / f).stat().st_size for f in artifact.file_names(model.metadata))
    rules = [
        rule("latency.p95_ms_single", "budget", None, lat.p95_ms_single, "<=", ok_single, measured=True),
        rule(
            "latency.p95_ms_batch",
            "budget",
            None,
            lat.p95_ms_batch,
            "<=",
            ok_batch,
            measured=True,
            rows=lat.batch_rows,
        ),
        rule("max_model_bytes", "budget", size, params.max_model_bytes, "<=", size <= params.max_model_bytes),
    ]
    timings = {
        "latency.p95_ms_single": {"p95_ms": single_ms, "budget_ms": lat.p95_ms_single, "passed": ok_single},
        "latency.p95_ms_batch": {
            "p95_ms": batch_ms,
            "budget_ms": lat.p95_ms_batch,
            "passed": ok_batch,
            "rows": lat.batch_rows,
        },
        "repeats": lat.repeats,
        "warmup": lat.warmup,
        "threads": lat.threads,
        "backend": model.backend,
    }
    return rules, timings


def served_model(
    backend: str, cand: model_lib.LoadedModel, model_dir: Path, threads: int
) -> tuple[scorer.Scorer, scorer.Scorer | None]:
    """(the model on the served backend for the latency rules, the ONNX model or None if not served).

    With `onnx` and no ONNX export, latency is measured on torch and the parity rule fails.
    """
    if backend == "onnx" and cand.metadata.get("onnx"):
        onnx = scorer.load_onnx(model_dir, threads)
        return onnx, onnx
    import torch

    torch.set_num_threads(threads)  # as the server runs it; more threads than cores spin under load
    return cand, None


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    return "–" if v is None else str(v)


def markdown(result: dict[str, Any], timings: dict[str, Any] | None = None) -> str:
    """The gate verdict as a markdown section (also embedded in the review report).

    Args:
        result: the gate.json content.
        timings: the timings file's content; when given (the review report, which DVC does not track),
            latency rows show the measured p95s, else they point at the file (gate.md, a DVC output).
    """
    lines = [f"### Gate: {'✅ passed' if result['passed'] else '❌ failed'}", ""]
    lines += ["| rule | value | bound | verdict |", "|---|---|---|---|"]
    for r in result["rules"]:
        value = _fmt(r["value"])
        if r.get("measured"):
            measured = (timings or {}).get(r["id"], {}).get("p95_ms")
            value = " then ".join(f"{t:.3g} ms" for t in measured) if measured else "measured (see timings)"
        if r["kind"] == "parity" and r["value"] is not None:
            exact = (timings or {}).get(r["id"])
            value = f"{exact:.3g}" if exact is not None else f"≤ {_fmt(r['value'])}"
        bound = f"{r['op']} {_fmt(r['bound'])}"
        mark = {"pass": "✅ pass", "fail": "❌ fail", "skip": "➖ skip"}[r["verdict"]]
        lines.append(f"| `{r['id']}` | {value} | {bound} | {mark} |")
    if result.get("timings") and timings is None:
        lines += ["", f"Measured latencies (machine-dependent, not tracked): `{result['timings']}`."]
    return "\n".join(lines) + "\n"


def run(
    params: GateParams,
    model_dir: Path,
    data: Path,
    test: Path,
    metrics_path: Path,
    out_json: Path,
    out_md: Path,
    fail: bool = True,
    timings_path: Path | None = None,
    backend: str = "onnx",
) -> dict[str, Any]:
    """Check every rule, write gate.json and gate.md, raise GateFailed (exit 4) if any rule failed.

    Args:
        params: the `gate` section.
        model_dir: the candidate (models/).
        data: the raw table; test: data/processed/test.parquet (the same test rows as evaluate).
        metrics_path: reports/metrics.json of the candidate.
        out_json: reports/gate.json; out_md: reports/gate.md.
        fail: False (`--no-fail`) reports a failure without raising.
        timings_path: where the measured latencies go (untracked; None: only the log).
        backend: `serve.backend`, the served path the parity and latency rules check.

    Returns:
        The gate.json content.
    """
    import json

    from mlops import model as model_lib
    from mlops.tables import split_rows

    log.info("gate: %s (metrics %s)", model_dir, metrics_path)
    cand = model_lib.load(model_dir)
    try:
        metrics = json.loads(metrics_path.read_text())
    except (OSError, ValueError) as e:
        raise DataError(f"{metrics_path}: unreadable metrics ({e}); run `mlops evaluate` first") from e
    params.check_task(cand.task.kind)  # a roc_auc bound on a regression model: exit 2, naming the key
    rules = absolute_rules(params, metrics["test"]) + class_rules(params, metrics["test"])
    rules += slice_rules(params, metrics.get("slices", {}))
    rows = split_rows(data, test, cand.metadata["id"])
    served, onnx = served_model(backend, cand, model_dir, params.latency.threads)
    parity, parity_diff = parity_rule(params, backend, cand.predict_proba(rows), onnx, rows)
    budget, timings = budget_rules(params, served, rows, model_dir)
    timings["onnx_parity.max_abs_diff"] = parity_diff
    rules += [parity, *budget]
    log.info(
        "gate: p95 latency single %s ms, batch %s ms",
        ", ".join(f"{t:.3f}" for t in timings["latency.p95_ms_single"]["p95_ms"]),
        ", ".join(f"{t:.3f}" for t in timings["latency.p95_ms_batch"]["p95_ms"]),
    )
    if timings_path is not None:
        files.write_json(timings_path, {"candidate": cand.metadata["weights"]["sha256"], **timings})
    failed = [r["id"] for r in rules if r["verdict"] == "fail"]
    result = {
        "passed": not failed,
        "failed": failed,
        "candidate": {"name": cand.name, "sha256": cand.metadata["weights"]["sha256"]},
        "split_rows": int(len(rows)),
        "rules": rules,
        "timings": str(timings_path) if timings_path is not None else None,
    }
    files.write_json(out_json, result)
    files.write_bytes(out_md, markdown(result).encode())
    log.info("gate: %d rules, %d failed -> %s", len(rules), len(failed), out_json)
    if failed and fail:
        raise GateFailed(f"{len(failed)} gate rule(s) failed: {', '.join(failed)} (see {out_json})")
    if failed:
        log.warning("gate: failed (%s), not blocking because of --no-fail", ", ".join(failed))
    return result


# ---------------------------------------------------------------- the command: `mlops gate`
HELP = "check the candidate against the absolute rules of params.yaml `gate` (exit 4 on failure)"
"""One line for `mlops --help` (read without importing this module)."""

SECTIONS: dict[str, type[Section]] = {
    "gate": GateParams,
    "serve": ServedBackend,
}
"""The params.yaml sections this stage reads (dvc.yaml declares the same), validated alone."""


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Options of `mlops gate`; path defaults are the paths dvc.yaml declares."""
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


def main(args: argparse.Namespace, params: Sections) -> None:
    """Run `mlops gate` with its validated sections."""
    result = run(
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
