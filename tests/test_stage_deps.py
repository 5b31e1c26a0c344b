"""dvc.yaml stays honest about code: each stage lists every project module it runs, and stages are leaves.

The import graph is computed from the source (ast): a stage `mlops <name>` runs `mlops/cli.py` (its
imports outside the operation-only functions), the stage module `mlops/stages/<name>.py`, and every
project module those import, at module level or inside a function. Each of those files must be a dependency of the stage
in dvc.yaml, or the run-cache could restore outputs made by other code. And no stage module imports
another stage module: what stages share lives in library modules.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import yaml

from conftest import REPO

SRC = REPO / "src"
STAGES = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
STAGE_MODULES = {f"mlops.stages.{name.replace('-', '_')}" for name in STAGES}


def module_file(name: str) -> Path | None:
    """The file of a project module or package (None for third-party modules)."""
    if name != "mlops" and not name.startswith("mlops."):
        return None
    base = SRC / Path(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def imported(nodes: list[ast.AST]) -> set[str]:
    """Project modules imported anywhere under `nodes` (including `from mlops import submodule`)."""
    out: set[str] = set()
    for node in (n for top in nodes for n in ast.walk(top)):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module] + [f"{node.module}.{a.name}" for a in node.names]
        else:
            continue
        for name in names:
            parts = name.split(".")
            # importing a.b.c runs a/__init__, a/b/__init__ too
            out.update(".".join(parts[:i]) for i in range(1, len(parts) + 1))
    return {n for n in out if module_file(n) is not None}


def closure(start: set[str]) -> set[str]:
    """Every project module reachable from `start` through imports."""
    seen: set[str] = set()
    todo = list(start)
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        path = module_file(name)
        assert path is not None, name
        todo += imported([ast.parse(path.read_text())]) - seen
    return seen


def dispatch(stage: str) -> set[str]:
    """What `mlops <stage>` imports: cli.py's imports outside its operation-only functions (those whose
    names contain "operation", and `_listing`: they import mlops.commands), and the stage module."""
    tree = ast.parse((SRC / "mlops/cli.py").read_text())
    nodes = [
        node
        for node in tree.body
        if not (isinstance(node, ast.FunctionDef) and ("operation" in node.name or node.name == "_listing"))
    ]
    return {"mlops.cli", f"mlops.stages.{stage.replace('-', '_')}", *imported(nodes)}


def stage_modules(stage: str) -> set[str]:
    """cli.py itself (not all it imports: only the dispatch path), then the closure of the rest."""
    return {"mlops.cli"} | closure(dispatch(stage) - {"mlops.cli"})


def test_no_stage_runs_another_command():
    """The operations (mlops.commands) and the whole-file params (mlops.config) are off every stage's path."""
    for stage in STAGES:
        reached = stage_modules(stage)
        assert not {m for m in reached if m == "mlops.commands" or m.startswith("mlops.commands.")}, stage
        assert "mlops.config" not in reached, stage
        assert "mlops.params.serve" not in reached, stage


def rel(name: str) -> str:
    path = module_file(name)
    assert path is not None
    return str(path.relative_to(REPO))


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_stage_deps_list_every_project_module_it_runs(stage):
    deps = set(STAGES[stage].get("deps", []))
    needed = {rel(m) for m in stage_modules(stage)}
    missing = sorted(needed - deps)
    assert not missing, f"dvc.yaml {stage}: deps lack the modules it imports: {missing}"
    # and no module the stage does not run (a stale dep reruns the stage for nothing)
    extra = sorted(d for d in deps if d.startswith("src/") and d not in needed)
    assert not extra, f"dvc.yaml {stage}: deps list modules it does not import: {extra}"


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_stages_are_leaves(stage):
    module = f"mlops.stages.{stage.replace('-', '_')}"
    reached = closure({module}) - {module}
    others = sorted(reached & STAGE_MODULES)
    assert not others, f"stage module {module} imports other stage modules {others}: move what they share"


def test_the_import_graph_sees_lazy_and_package_imports():
    """The analysis itself: function-level imports and `from mlops import x` count."""
    compare = closure({"mlops.compare"})
    assert {"mlops.registry", "mlops.records", "mlops.model", "mlops.files", "mlops"} <= compare
    assert "mlops.compare" not in closure({"mlops.metrics"})
    assert "mlops.stages.train" in stage_modules("train") and "mlops.stages.evaluate" not in stage_modules(
        "train"
    )


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_no_stage_depends_on_deploy_or_the_champion(stage):
    """The pipeline depends only on data, code and params: a promotion or rollback (a commit under
    deploy/) leaves every stage up to date, and the champion comparison (a moving record, the registry)
    runs in `mlops report` and `mlops promote`, never in a stage."""
    spec = STAGES[stage]
    deps = spec.get("deps", [])
    assert not [d for d in deps if d == "deploy" or d.startswith("deploy/")], f"{stage}: {deps}"
    assert "deploy/" not in spec["cmd"], spec["cmd"]
    params = [p if isinstance(p, str) else next(iter(p)) for p in spec.get("params", [])]
    assert not [p for p in params if p.split(".")[0] == "champion"], params
    assert "mlops.compare" not in stage_modules(stage)
