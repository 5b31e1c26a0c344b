"""lockcheck: did this `dvc repro` reproduce the committed dvc.lock? -> reports/lock-check.json (exit 8 if not).

CI's train job runs it after `dvc repro` (its output in reports/repro.log). For every stage of the lock the
run wrote, it compares the committed lock (`git show <ref>:dvc.lock`):

- same inputs (deps and params) and the same output hashes: reproduced;
- same inputs, an output with another hash: **differs** (both hashes listed): the machine or the code
  paths changed the bytes, so the model CI gates and registers is not the one dvc.lock names;
- other inputs: the stage ran on inputs the committed lock does not describe. When the always-run
  `fingerprint` stage saw its source change, that is new data (`source-changed`, reported only);
  otherwise the lock was not updated after a change (**stale**: run `dvc repro` and commit dvc.lock).

From DVC's log it tells which stages ran, which the run-cache restored and which were up to date, so the
verdict reads `identical` (stages ran, same bytes), `restored` (the run-cache restored them, nothing
ran), `up-to-date`, `differs`, `stale` or `source-changed`. `differs` and `stale` fail (exit 8) unless params.yaml
`reproducibility.fail_on_mismatch` is false. The review report shows the result.
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import yaml

from mlops import files, numerics
from mlops.errors import ConfigError, NotReproduced

log = logging.getLogger(__name__)

SOURCE_STAGE = "fingerprint"
"""The always-run stage whose output changes exactly when the data source changed."""

# DVC's own messages for what `dvc repro` did with each stage (dvc 3.x)
_RAN = re.compile(r"^Running stage '([^']+)'", re.M)
_RESTORED = re.compile(r"^Stage '([^']+)' is cached - skipping run", re.M)
_UNCHANGED = re.compile(r"^Stage '([^']+)' didn't change, skipping", re.M)

FAILING = ("differs", "stale")
"""Verdicts that fail the job when `reproducibility.fail_on_mismatch` is true."""


def _hashes(entries: list[dict[str, Any]] | None) -> dict[str, str | None]:
    """path -> md5 (or another hash DVC recorded) of a lock stage's deps or outs."""
    out: dict[str, str | None] = {}
    for e in entries or []:
        out[e["path"]] = e.get("md5") or e.get("etag") or e.get("checksum")
    return out


def stage_actions(repro_log: str) -> dict[str, str]:
    """stage -> ran | restored | unchanged, from `dvc repro`'s output."""
    actions: dict[str, str] = {}
    for pattern, action in ((_UNCHANGED, "unchanged"), (_RESTORED, "restored"), (_RAN, "ran")):
        for name in pattern.findall(repro_log):
            actions[name] = action
    return actions


def compare(committed: dict[str, Any], current: dict[str, Any]) -> list[dict[str, Any]]:
    """Per stage of the current lock: its status vs the committed lock and what differs.

    Args:
        committed: the committed dvc.lock (parsed); current: the lock `dvc repro` wrote.

    Returns:
        One row per stage: {stage, status: same|differs|inputs-changed|new, outputs: [{path, committed,
        reproduced}], inputs: [changed dep paths or params keys]}.
    """
    rows = []
    old_stages = committed.get("stages", {}) or {}
    for name, new in (current.get("stages", {}) or {}).items():
        old = old_stages.get(name)
        if old is None:
            rows.append({"stage": name, "status": "new", "outputs": [], "inputs": []})
            continue
        inputs = sorted(
            p
            for p in set(_hashes(old.get("deps"))) | set(_hashes(new.get("deps")))
            if _hashes(old.get("deps")).get(p) != _hashes(new.get("deps")).get(p)
        )
        old_params, new_params = old.get("params", {}) or {}, new.get("params", {}) or {}
        for file in set(old_params) | set(new_params):
            a, b = old_params.get(file, {}) or {}, new_params.get(file, {}) or {}
            inputs += sorted(f"{file}:{k}" for k in set(a) | set(b) if a.get(k) != b.get(k))
        if old.get("cmd") != new.get("cmd"):
            inputs.append("cmd")
        old_outs, new_outs = _hashes(old.get("outs")), _hashes(new.get("outs"))
        outputs = [
            {"path": p, "committed": old_outs.get(p), "reproduced": new_outs.get(p)}
            for p in sorted(set(old_outs) | set(new_outs))
            if old_outs.get(p) != new_outs.get(p)
        ]
        status = "inputs-changed" if inputs else ("differs" if outputs else "same")
        rows.append({"stage": name, "status": status, "outputs": outputs, "inputs": inputs})
    return rows


def verdict(rows: list[dict[str, Any]], actions: dict[str, str]) -> str:
    """identical | restored | up-to-date | differs | stale | source-changed for the whole run."""
    by_stage = {r["stage"]: r for r in rows}
    if any(r["status"] == "differs" and r["stage"] != SOURCE_STAGE for r in rows):
        return "differs"
    changed = [r for r in rows if r["status"] in ("inputs-changed", "new")]
    source = by_stage.get(SOURCE_STAGE)
    if source is not None and source["status"] == "differs":
        return "source-changed"  # new data: every downstream stage's inputs follow from it
    if changed:
        return "stale"
    if any(a == "ran" for s, a in actions.items() if s != SOURCE_STAGE):
        return "identical"
    return "restored" if "restored" in actions.values() else "up-to-date"


def committed_lock(repo: Path, ref: str, lock: Path) -> dict[str, Any]:
    """The dvc.lock committed at `ref` (ConfigError naming the ref when git has none)."""
    rel = lock.resolve().relative_to(repo.resolve()).as_posix() if lock.is_absolute() else lock.as_posix()
    try:
        out = subprocess.run(
            ["git", "show", f"{ref}:{rel}"], cwd=repo, capture_output=True, text=True, timeout=60
        )
    except OSError as e:
        raise ConfigError(f"lock-check: git is not available ({e}); it reads the committed {rel}") from e
    if out.returncode != 0:
        raise ConfigError(f"lock-check: no {rel} committed at {ref} ({out.stderr.strip()[:200]})")
    return yaml.safe_load(out.stdout) or {}


def run(
    lock: Path,
    ref: str,
    repro_log: Path | None,
    out: Path,
    fail_on_mismatch: bool,
    repo: Path = Path("."),
) -> dict[str, Any]:
    """Compare the lock `dvc repro` wrote with the committed one; write `out`; raise on a failing verdict.

    Args:
        lock: dvc.lock in the working tree (after `dvc repro`).
        ref: the git commit whose dvc.lock is the reference (HEAD in CI).
        repro_log: `dvc repro`'s output (which stages ran or were restored); None: unknown.
        out: reports/lock-check.json.
        fail_on_mismatch: params.yaml `reproducibility.fail_on_mismatch`.
        repo: the git checkout.

    Returns:
        The lock-check.json content.

    Raises:
        NotReproduced: verdict `differs` or `stale` and fail_on_mismatch (exit 8).
    """
    try:
        current = yaml.safe_load(lock.read_text()) or {}
    except (OSError, yaml.YAMLError) as e:
        raise ConfigError(f"{lock}: unreadable ({e}); run `dvc repro` first".replace("\n", " ")) from e
    committed = committed_lock(repo, ref, lock)
    actions = stage_actions(repro_log.read_text()) if repro_log is not None and repro_log.is_file() else {}
    rows = compare(committed, current)
    for row in rows:
        row["action"] = actions.get(row["stage"], "unknown")
    result = {
        "verdict": verdict(rows, actions),
        "ref": ref,
        "stages": rows,
        "cpu": numerics.cpu_level(),
        "numerics": _pinned_state(),
    }
    files.write_json(out, result)
    log.info("lock-check: %s (%s) -> %s", result["verdict"], summary(result), out)
    if result["verdict"] in FAILING:
        message = f"{summary(result)} (see {out})"
        if fail_on_mismatch:
            raise NotReproduced(message)
        log.warning("lock-check: %s; not failing: reproducibility.fail_on_mismatch is false", message)
    return result


def _pinned_state() -> str:
    """pinned | native: whether this process ran with the pinned numeric code paths."""
    return "pinned" if all(os.environ.get(k) == v for k, v in numerics.PINNED.items()) else "native"


def summary(result: dict[str, Any]) -> str:
    """One line: the verdict and what differs."""
    v = result["verdict"]
    rows = result["stages"]
    if v == "differs":
        outs = [o for r in rows if r["status"] == "differs" for o in r["outputs"]]
        listed = ", ".join(
            f"{o['path']} {str(o['committed'])[:8]} -> {str(o['reproduced'])[:8]}" for o in outs[:4]
        )
        more = f" and {len(outs) - 4} more" if len(outs) > 4 else ""
        return f"not reproduced: {len(outs)} output(s) differ from the committed dvc.lock: {listed}{more}"
    if v == "stale":
        stale = [r for r in rows if r["status"] in ("inputs-changed", "new")]
        what = "; ".join(f"{r['stage']} ({', '.join(r['inputs'][:3]) or 'new stage'})" for r in stale[:4])
        return f"dvc.lock not updated: inputs changed since it was committed: {what}; run `dvc repro` and commit dvc.lock"
    if v == "source-changed":
        return "the data source changed since dvc.lock was committed: stages ran on new data"
    if v == "identical":
        ran = [r["stage"] for r in rows if r["action"] == "ran"]
        return f"reproduced: identical ({', '.join(ran)} ran; every output equals the committed dvc.lock)"
    if v == "restored":
        restored = [r["stage"] for r in rows if r["action"] == "restored"]
        return f"reproduced: the run-cache restored {', '.join(restored)}; no stage ran"
    return "reproduced: every stage was up to date with the committed dvc.lock; no stage ran"


def markdown(result: dict[str, Any]) -> str:
    """The review report's section."""
    lines = ["### Reproducibility", "", summary(result) + ".", ""]
    diffs = [(r["stage"], o) for r in result["stages"] if r["status"] == "differs" for o in r["outputs"]]
    if diffs:
        lines += ["| stage | output | committed md5 | reproduced md5 |", "|---|---|---|---|"]
        lines += [f"| {s} | `{o['path']}` | `{o['committed']}` | `{o['reproduced']}` |" for s, o in diffs]
        lines.append("")
    cpu = result.get("cpu", {})
    if cpu and not cpu.get("in_scope"):
        lines.append(
            f"This runner ({cpu.get('machine')}, missing {', '.join(cpu.get('flags_missing') or []) or '-'}) "
            "is outside x86-64-v3 (AVX2 + FMA): its float bits may differ from locks made elsewhere."
        )
        lines.append("")
    return "\n".join(lines)
