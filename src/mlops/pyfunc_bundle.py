"""pyfunc_bundle: what a registered MLflow pyfunc carries so it loads without this package installed.

`mlops register` logs `pyfunc_model.py` as a "models from code" pyfunc. Everything that file needs at
load and predict time must travel with it:

- **code**: the project modules it reaches, found by walking the import statements (`ast`, no import is
  executed) from `pyfunc_model.py` through `src/mlops`, lazy imports inside functions included. They are
  copied into the model's `code/mlops/...`, which MLflow puts on `sys.path` when it loads the model.
  A module a future change adds to the model's import graph is bundled without anyone editing a list.
- **requirements**: the third-party distributions of the same import graph (standard library left
  out), pinned to the versions installed where the model was registered; this is the model's
  `requirements.txt`, all a consumer installs.
- **signature**: the input columns and types of model.json's feature spec; the output columns of the
  model's task (those `pyfunc_model.py` returns).
"""

from __future__ import annotations

import ast
import importlib.metadata
import shutil
import sys
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

PACKAGE = "mlops"
PACKAGE_DIR = Path(__file__).resolve().parent
ENTRY = PACKAGE_DIR / "pyfunc_model.py"
# a distribution that provides a top-level name is not always the one a consumer should install
_PREFERRED_DIST = {"mlflow": "mlflow"}  # mlflow-skinny also ships `mlflow`; the pyfunc needs the full one


@dataclass(frozen=True)
class ImportGraph:
    """The project modules reached from an entry file, and the third-party top-level names they import."""

    modules: tuple[str, ...]  # dotted names, e.g. ("mlops", "mlops.errors", ...), sorted
    files: tuple[Path, ...]  # their source files (package __init__.py files included)
    third_party: tuple[str, ...]  # top-level import names outside the standard library, sorted


def _module_file(dotted: str, root: Path) -> Path | None:
    """The source file of `mlops.a.b` under `root` (the directory holding the `mlops` package)."""
    base = root.joinpath(*dotted.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def _imports(path: Path, dotted: str) -> Iterable[str]:
    """Every module name `path` (module `dotted`) imports, at any depth, relative imports resolved."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = dotted if path.name == "__init__.py" else dotted.rpartition(".")[0]
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1])
                module = f"{base}.{node.module}" if node.module else base
            else:
                module = node.module or ""
            if module == "__future__":
                continue
            yield module
            # `from mlops import model`: `mlops.model` is a module, not an attribute of mlops/__init__
            yield from (f"{module}.{alias.name}" for alias in node.names if alias.name != "*")


def import_graph(entry: Path = ENTRY, root: Path = PACKAGE_DIR.parent) -> ImportGraph:
    """Walk the imports of `entry` through the project package under `root`.

    Args:
        entry: the file to start from (default: pyfunc_model.py).
        root: the directory that holds the `mlops` package (src/).

    Returns:
        The reached project modules (with every enclosing package's __init__) and third-party names.
    """
    stdlib = set(sys.stdlib_module_names)
    modules: dict[str, Path] = {}
    third_party: set[str] = set()
    todo: list[tuple[str, Path]] = [(f"{PACKAGE}.{entry.stem}", entry)]
    seen: set[str] = set()
    while todo:
        dotted, path = todo.pop()
        if dotted in seen:
            continue
        seen.add(dotted)
        if path != entry:
            modules[dotted] = path
        for name in _imports(path, dotted):
            top = name.split(".")[0]
            if top != PACKAGE:
                if top and top not in stdlib:
                    third_party.add(top)
                continue
            parts = name.split(".")
            for i in range(1, len(parts) + 1):  # the package __init__ files on the way run on import
                prefix = ".".join(parts[:i])
                found = _module_file(prefix, root)
                if found is not None and prefix not in seen:
                    todo.append((prefix, found))
    return ImportGraph(
        modules=tuple(sorted(modules)),
        files=tuple(modules[m] for m in sorted(modules)),
        third_party=tuple(sorted(third_party)),
    )


def requirements(names: Iterable[str]) -> list[str]:
    """Pinned requirement lines (`dist==version`) for top-level import names, from the installed dists.

    Raises:
        RuntimeError: a name no installed distribution provides (the pyfunc could not load anywhere).
    """
    providers = importlib.metadata.packages_distributions()
    pins = set()
    for name in names:
        dists = providers.get(name)
        if not dists:
            raise RuntimeError(f"pyfunc bundle: no installed distribution provides the import {name!r}")
        dist = _PREFERRED_DIST.get(name) if _PREFERRED_DIST.get(name) in dists else sorted(dists)[0]
        version = importlib.metadata.version(dist).split("+")[0]  # torch 2.13.0+cpu -> torch==2.13.0
        pins.add(f"{dist}=={version}")
    return sorted(pins, key=str.lower)


def stage_code(dest: Path, graph: ImportGraph | None = None, root: Path = PACKAGE_DIR.parent) -> Path:
    """Copy the graph's project modules into `dest/mlops/...`; return `dest/mlops` (the code path).

    Args:
        dest: an empty directory.
        graph: the import graph (default: that of pyfunc_model.py).
        root: the directory that holds the `mlops` package.
    """
    graph = graph or import_graph(root=root)
    for path in graph.files:
        target = dest / path.relative_to(root)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, target)
    return dest / PACKAGE


def signature(meta: dict[str, Any]):
    """The MLflow signature of a model: model.json's features in; its task's outputs out (doubles named
    by `Task.prediction_column_names`: binary `probability`, multiclass `probability[<class>]` per
    class, regression `prediction`; then the string `label` of a classification model)."""
    from mlflow.models import ModelSignature
    from mlflow.types import ColSpec, Schema

    from mlops.task import LABEL_OUTPUT, Task

    types = {"INT64": "long", "INT32": "integer", "FP64": "double", "FP32": "float", "BOOL": "boolean"}
    inputs = [
        ColSpec(
            types.get(f["dtype"], "double") if f["kind"] == "numeric" else "string",
            f["name"],
            required=not f["nullable"],
        )
        for f in meta["features"]
    ]
    task = Task.from_metadata(meta)
    outputs = [ColSpec("double", name) for name in task.prediction_column_names()]
    if task.is_classification:
        outputs.append(ColSpec("string", LABEL_OUTPUT))
    return ModelSignature(inputs=Schema(inputs), outputs=Schema(outputs))
