"""Merge-request feedback time: the GitLab merge-request pipeline (verify, train with the gate, report, as
the merge-request rules and `needs` order them) run end to end by gitlab-ci-local, cold and warm, for this
tree and a baseline tree side by side in one run.

- cold: a fresh clone, an empty DVC remote and MLflow store, a merge request whose commit changes code
  every stage depends on (src/mlops/cli.py): every stage runs;
- warm: a second commit on the same branch that touches no stage dependency (README), with the DVC remote
  the cold run pushed to: `dvc pull --run-cache` restores the outputs and `dvc repro` runs only the
  always-changed source fingerprint. Repeated (--warm-runs, default 3: one more such commit each time),
  alternating between the trees; the run with the median end-to-end time is reported, all are kept.
CI_MERGE_REQUEST_DIFF_BASE_SHA is the merge request's base (main), as GitLab sets it.

The jobs are named on the command line (not ci-image: it builds with a runner's own Docker engine; not
test-e2e/test-docker: they follow verify and do not hold up the review report), so gitlab-ci-local
orders them by the file's own `needs` and stages: the baseline's train waits for verify, this tree's runs
alongside it. gitlab-ci-local starts the next jobs only when the whole running batch is done, so the
report here follows max(verify, train); on GitLab it follows train alone.

Jobs run with the shell executor in isolated copies (`--shell-isolation`), as tests/e2e/test_gitlab_pipeline.py
runs them, and share one virtualenv (VENV) and the Node tools (NODE_MODULES), as the CI image provides
them; PYTHONPATH points the jobs at the tree's src/, so the baseline runs the baseline's code. The shared
virtualenv holds this tree's dependencies (a superset of the baseline's when only dev tools were added):
the install stamps of a tree whose pyproject.toml differs are created for the run and removed after, so
no job reinstalls into the shared environment. Both trees' jobs compete for the same CPUs (as jobs of
one pipeline on one runner would); the load average before and after each pipeline is recorded. Each
pipeline starts without the bytecode an earlier one wrote, as a job in a fresh CI container would.
Holds /tmp/mlops-docker.lock while gitlab-ci-local runs (shared with the Docker and pipeline tests).

Usage: python benchmarks/ci/mr_pipeline.py [--baseline-ref HEAD | --baseline-ref none]
       [--current-ref REF (default: the working tree)] [--out ...]
Reproduce: `make bench-ci`.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO / "tests"))
from e2e.test_gitlab_pipeline import SHAPES  # noqa: E402 - the same merge-request shape the e2e tests run

from conftest import copy_repository, tool  # noqa: E402 - the tests' repository copy and tool lookup

JOBS = ["verify", "train", "report"]
TARGETS = {"cold_s": 180.0, "warm_s": 60.0}
LOCK = "/tmp/mlops-docker.lock"


def git(repo: Path, *args: str) -> None:
    subprocess.run(
        ["git", "-c", "user.name=bench", "-c", "user.email=bench@example.invalid", *args],
        cwd=repo,
        check=True,
        capture_output=True,
    )


def baseline_tree(ref: str, dest: Path) -> Path:
    """`git archive ref` of this repository in a fresh git repository on `main` (read-only for REPO)."""
    dest.mkdir(parents=True)
    archive = subprocess.run(["git", "archive", ref], cwd=REPO, check=True, capture_output=True).stdout
    subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
    git(dest, "init", "-q", "-b", "main")
    git(dest, "add", "-A")
    git(dest, "commit", "-q", "-m", f"baseline {ref}")
    return dest


@contextlib.contextmanager
def install_stamps(venv: Path, trees: list[Path]):
    """The Makefile's install stamps (keyed by pyproject.toml's content) for each tree, in the shared
    virtualenv: where one is missing, a job (or a test that runs make) would `pip install -e` its temp
    copy into the shared environment. Created for the run, removed after."""
    made = []
    try:
        for tree in trees:
            digest = hashlib.sha1((tree / "pyproject.toml").read_bytes()).hexdigest()[:12]
            for stamp in (venv / f".installed-{digest}", venv / f".installed-dev-{digest}"):
                if not stamp.exists():
                    stamp.touch()
                    made.append(stamp)
        yield
    finally:
        for stamp in made:
            stamp.unlink(missing_ok=True)


def drop_bytecode(venv: Path, repo: Path) -> None:
    """Bytecode an earlier pipeline of this run wrote (pytest's assertion-rewritten modules in the shared
    virtualenv, __pycache__ in gitlab-ci-local's job copies): a CI job in a fresh container has none."""
    for pyc in list((venv / "lib").rglob("*-pytest-*.pyc")):
        pyc.unlink(missing_ok=True)
    jobs = repo / ".gitlab-ci-local"
    for cache in list(jobs.rglob("__pycache__")) if jobs.exists() else []:
        shutil.rmtree(cache, ignore_errors=True)


def pytest_summary(log: str, job: str) -> dict | None:
    """The last pytest summary line a job printed: counts and pytest's own wall time."""
    lines = re.findall(rf"^{re.escape(job)}\s+> (=* ?\d+ passed.*)$", log, re.M)
    if not lines:
        return None
    line = lines[-1]
    counts = {k: int(n) for n, k in re.findall(r"(\d+) (passed|failed|errors?|skipped|deselected)", line)}
    took = re.search(r" in ([\d.]+)s", line)
    return {**counts, "pytest_s": float(took.group(1)) if took else None}


# the OIP spec and CRD schemas where .ci/run finds them (the workplace's shared/ beside the checkout):
# without them (no internet here) verify's spec and schema tests skip, as they would not in CI
_SHARED = REPO.parent / "shared"
SPECS = (
    {"OIP_SPEC_LOCATION": str(_SHARED / "specs/oip"), "MLOPS_CRD_SCHEMAS": str(_SHARED / "schemas")}
    if (_SHARED / "specs/oip").is_dir()
    else {}
)


def pipeline(repo: Path, code: Path, state: Path, venv: Path, extra: dict[str, str], jobs: list[str]) -> dict:
    """One merge-request pipeline run; total and per-job wall time, job verdicts."""
    args = [tool("gitlab-ci-local"), "--force-shell-executor", "--shell-isolation", *SHAPES["merge_request"]]
    variables = {
        "VENV": str(venv),
        "NODE_MODULES": str(REPO / "tools/node_modules"),
        # the shared VENV's editable install points at this checkout: the tree under test goes first
        # (its code is what every job copy holds; $CI_PROJECT_DIR is a /builds path with an `image:`)
        "PYTHONPATH": str(code / "src"),
        "DVC_REMOTE_URL": str(state / "remote"),
        "MLFLOW_TRACKING_URI": f"sqlite:///{state / 'mlflow.db'}",
        **SPECS,
        **extra,
    }
    for key, value in variables.items():
        args += ["--variable", f"{key}={value}"]
    # an outer gitlab-ci-local's options and a caller's make/pytest selection (MAKEFLAGS carries
    # `make ... PYTEST_ARGS=...` into every nested make) stay outside the measured pipeline
    caller = ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "MAKEOVERRIDES", "PYTEST_ARGS", "PYTEST_ADDOPTS")
    env = {k: v for k, v in os.environ.items() if not k.startswith("GCL_") and k not in caller}
    env["GCL_IGNORE_PREDEFINED_VARS"] = "CI_PIPELINE_SOURCE,CI_COMMIT_BRANCH"
    env.pop("MLFLOW_TRACKING_URI", None)
    env.pop("PYTHONPATH", None)
    drop_bytecode(venv, repo)
    with open(LOCK, "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        load_before = os.getloadavg()
        start = time.perf_counter()
        proc = subprocess.run([*args, *jobs], cwd=repo, env=env, capture_output=True, text=True)
        total = time.perf_counter() - start
        load_after = os.getloadavg()
    log = proc.stdout + proc.stderr
    (state / f"gitlab-ci-local-{int(time.time())}.log").write_text(log)
    times = {}
    for job, value, unit in re.findall(r"^(\S+)\s+finished in ([\d.]+) (ms|s|min)", log, re.M):
        times[job] = round(float(value) * {"ms": 0.001, "s": 1.0, "min": 60.0}[unit], 1)
    verdicts = dict((job, verdict) for verdict, job in re.findall(r"^\s*(PASS|FAIL)\s+(\S+)", log, re.M))
    return {
        "total_s": round(total, 1),
        "jobs_s": times,
        "verdicts": verdicts,
        "exit_code": proc.returncode,
        "verify_tests": pytest_summary(log, "verify") if "verify" in jobs else None,
        "load_avg_1m": {"before": round(load_before[0], 2), "after": round(load_after[0], 2)},
    }


def prepare(name: str, source: Path, tmp: Path, extra: dict[str, str]) -> dict:
    """A clone of one tree (a git repository on `main`) with a merge-request branch whose commit changes
    code every stage depends on; its state folder (DVC remote, MLflow store, logs) and CI variables."""
    state = tmp / name
    state.mkdir()
    repo = state / "repo"
    subprocess.run(["git", "clone", "-q", str(source), str(repo)], check=True)
    # the CI image tag is derived data (`make ci-image-pin`); a tree whose pin is stale fails verify's
    # pin test and never reaches train: pin it, so the pipeline measured is a green one
    tag = subprocess.run(
        ["make", "--no-print-directory", "ci-image-tag"], cwd=repo, capture_output=True, text=True
    )
    if tag.stdout.strip() not in (repo / ".gitlab-ci.yml").read_text():
        subprocess.run(
            ["make", "--no-print-directory", "ci-image-pin"], cwd=repo, check=True, capture_output=True
        )
        git(repo, "commit", "-qam", "pin the CI image tag")
    base = subprocess.run(["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True).stdout
    git(repo, "checkout", "-qb", "feature")
    # a code change every stage depends on (a comment: the code that runs is the tree's, see PYTHONPATH)
    with (repo / "src/mlops/cli.py").open("a") as f:
        f.write("# benchmark: a change to code every stage depends on\n")
    git(repo, "commit", "-qam", "code change")
    # CI_MERGE_REQUEST_DIFF_BASE_SHA: the merge request's base, as GitLab sets it
    return {
        "name": name,
        "source": source,
        "repo": repo,
        "state": state,
        "extra": {"CI_MERGE_REQUEST_DIFF_BASE_SHA": base.strip(), **extra},
    }


def run(tree: dict, scenario: str, venv: Path, jobs: list[str]) -> dict:
    """One merge-request pipeline of a prepared tree: `cold` on its code change (every stage runs, empty
    remote), `warm` on a further commit that touches no stage dependency (the run-cache restores every
    stage from the remote the earlier runs pushed to)."""
    if scenario == "warm":
        with (tree["repo"] / "README.md").open("a") as f:
            f.write("\n<!-- benchmark: a documentation-only change -->\n")
        git(tree["repo"], "commit", "-qam", "docs only")
    print(f"{tree['name']}: {scenario} pipeline ...", file=sys.stderr, flush=True)
    result = pipeline(tree["repo"], tree["source"], tree["state"], venv, tree["extra"], jobs)
    print(f"{tree['name']}: {scenario} {result}", file=sys.stderr, flush=True)
    return result


def median_run(runs: list[dict]) -> dict:
    """The run whose end-to-end time is the median (per-job figures stay those of one real run)."""
    return sorted(runs, key=lambda r: r["total_s"])[(len(runs) - 1) // 2]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--baseline-ref", default="HEAD", help="git ref of the baseline, or `none` to skip it")
    ap.add_argument(
        "--current-ref", default=None, help="git ref of the tree under test (default: the working tree)"
    )
    ap.add_argument(
        "--jobs", nargs="+", default=JOBS, help="the jobs to run (default: %(default)s); e.g. train report"
    )
    ap.add_argument("--only", choices=["baseline", "current"], default=None, help="run one tree only")
    ap.add_argument(
        "--warm-runs",
        type=int,
        default=3,
        help="warm pipelines per tree, alternating between the trees; the median run is reported",
    )
    ap.add_argument("--var", action="append", default=[], metavar="K=V", help="extra CI variable")
    ap.add_argument("--keep", type=Path, default=None, help="keep the job logs in this folder")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks/ci/results.json")
    args = ap.parse_args()
    extra = dict(v.split("=", 1) for v in args.var)
    venv = Path(sys.executable).parent.parent
    results: dict = {}
    with tempfile.TemporaryDirectory(prefix="bench-ci-") as tmp_name:
        tmp = Path(tmp_name)
        trees = {}
        if args.only != "baseline":
            # tracked and new files, as a CI clone of the change; or a commit
            trees["current"] = (
                baseline_tree(args.current_ref, tmp / "current-src")
                if args.current_ref
                else copy_repository(tmp / "current-src")
            )
        if args.baseline_ref != "none" and args.only != "current":
            trees["baseline"] = baseline_tree(args.baseline_ref, tmp / "base-src")
        prepared = [prepare(name, tree, tmp, extra) for name, tree in trees.items()]
        runs: dict[str, dict] = {t["name"]: {"warm_runs": []} for t in prepared}
        with install_stamps(venv, list(trees.values())):
            # this tree first: on a busy machine its figures are the ones a partial run must not lose;
            # the warm runs alternate between the trees, so a change in the machine's load hits both
            for tree in prepared:
                runs[tree["name"]]["cold"] = run(tree, "cold", venv, args.jobs)
            for _ in range(args.warm_runs):
                for tree in prepared:
                    runs[tree["name"]]["warm_runs"].append(run(tree, "warm", venv, args.jobs))
        for name, r in runs.items():
            results[name] = {
                "cold": r["cold"],
                "warm": median_run(r["warm_runs"]),
                "warm_runs": r["warm_runs"],
            }
        if args.keep:
            args.keep.mkdir(parents=True, exist_ok=True)
            for log in tmp.glob("*/gitlab-ci-local-*.log"):
                log.rename(args.keep / f"{log.parent.name}-{log.name}")
    last = "current" if "current" in results else "baseline"
    whole = sorted(args.jobs) == sorted(JOBS)
    out = {
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
        },
        "date": time.strftime("%Y-%m-%d"),
        "baseline_ref": args.baseline_ref,
        "current_ref": args.current_ref or "working tree",
        "jobs": args.jobs,
        "executor": "gitlab-ci-local 4.73.0, shell executor, --shell-isolation, shared VENV and NODE_MODULES",
        "warm": f"the median of {args.warm_runs} runs by end-to-end time, alternating between the trees",
        "results": results,
        "targets": TARGETS,
        # current / baseline end to end, per scenario (lower is faster)
        "ratio_current_to_baseline": {
            s: round(results["current"][s]["total_s"] / results["baseline"][s]["total_s"], 2)
            for s in ("cold", "warm")
        }
        if {"current", "baseline"} <= set(results)
        else None,
        # the targets are for the whole merge-request pipeline, not for a subset of its jobs
        "meets_targets": {
            k: results[last][k.removesuffix("_s")]["total_s"] <= v
            and results[last][k.removesuffix("_s")]["exit_code"] == 0
            for k, v in TARGETS.items()
        }
        if whole
        else None,
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    args.out.with_suffix(".md").write_text(markdown(out))
    print(args.out.with_suffix(".md").read_text())
    return 0


def markdown(out: dict) -> str:
    res = out["results"]
    cols = [(v, s) for v in ("baseline", "current") if v in res for s in ("cold", "warm")]
    head = " | ".join(f"{v} {s}" for v, s in cols)
    lines = [
        "# Merge-request pipeline feedback time (gitlab-ci-local)",
        "",
        f"{out['date']}, {out['machine']['cpus']} CPUs, Python {out['machine']['python']}; {out['executor']}. "
        f"Baseline: `{out['baseline_ref']}`, current: {out['current_ref']}, in the same run; warm: "
        f"{out.get('warm', 'one run')}. Jobs run: "
        f"{', '.join(out['jobs'])} (ordered by each tree's own `needs`; a subset may be run with `--jobs`). "
        "Reproduce: `make bench-ci`.",
        "",
        f"| wall time (s) | {head} |",
        "|---|" + "---|" * len(cols),
    ]
    for job in [*out["jobs"], "total (end to end)"]:
        cells = []
        for v, s in cols:
            r = res[v][s]
            cells.append(str(r["total_s"] if job.startswith("total") else r["jobs_s"].get(job, "–")))
        lines.append(f"| {job} | {' | '.join(cells)} |")

    def tests(r: dict) -> str:
        t = r.get("verify_tests")
        if not t:
            return "–"
        skipped = f", {t['skipped']} skipped" if t.get("skipped") else ""
        return f"{t.get('passed', 0)} passed{skipped} in {t['pytest_s']:.0f} s" if t.get("pytest_s") else "?"

    def load(r: dict) -> str:
        la = r.get("load_avg_1m")
        return f"{la['before']} → {la['after']}" if la else "–"

    lines.append(f"| verify's pytest | {' | '.join(tests(res[v][s]) for v, s in cols)} |")
    verdicts = " | ".join(
        ",".join(f"{j}:{x}" for j, x in res[v][s]["verdicts"].items()) or "–" for v, s in cols
    )
    lines.append(f"| verdicts | {verdicts} |")
    lines.append(f"| load average (1 min) before → after | {' | '.join(load(res[v][s]) for v, s in cols)} |")
    ratio = out.get("ratio_current_to_baseline")
    counts = [res[v]["cold"].get("verify_tests") or {} for v in ("baseline", "current") if v in res]
    moved = counts[0].get("passed", 0) - counts[-1].get("passed", 0) if len(counts) == 2 else 0
    spread = ", ".join(
        f"{v} {[r['total_s'] for r in res[v]['warm_runs']]}" for v in ("baseline", "current") if v in res
    )
    notes = [
        f"Warm runs, end to end (s): {spread}." if spread else "",
        f"The current verify runs {moved} tests fewer than the baseline's: the ones marked `slow` since, "
        "which the merge request's test-e2e job runs (it follows verify and is not on the review report's "
        "path; not measured here)."
        if moved > 0
        else "",
        f"Current / baseline, end to end: cold {ratio['cold']}, warm {ratio['warm']}." if ratio else "",
        f"Targets: cold ≤ {out['targets']['cold_s']:.0f} s, warm ≤ {out['targets']['warm_s']:.0f} s; "
        f"met: {out['meets_targets'] if out['meets_targets'] is not None else 'n/a (a subset of the jobs)'}.",
    ]
    for note in filter(None, notes):
        lines += ["", note]
    lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
