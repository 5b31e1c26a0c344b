"""dag: dvc.yaml → stages and their dependency graph, the way DVC builds it (no DVC import).

A stage depends on another when one of its deps overlaps one of the other's outputs (the same path, or
one inside the other): DVC's rule for `dvc dag`. Outputs are `outs`, `metrics` and `plots` entries.
`data_deps(stage)` are the paths `dvc pull` must fetch before the stage can run: its deps that are
produced by other stages (code and params come with the image). Parametrized stages (`foreach`,
`matrix`, `${...}` templating) and a `wdir` are not supported: a ConfigError names the stage.
`params` are the (file, key) pairs a stage declares (`params.yaml` unless a `{file: [keys]}` entry says
otherwise): `params_values()` reads them, so an orchestrator can label a run with their hash.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from mlops.errors import ConfigError
from mlops.params_io import read_yaml

OUTPUT_KEYS = ("outs", "metrics", "plots")


@dataclass(frozen=True)
class Stage:
    """One dvc.yaml stage: its name, shell command, dependency paths and output paths."""

    name: str
    cmd: str
    deps: tuple[str, ...]
    outs: tuple[str, ...]
    params: tuple[tuple[str, str], ...] = ()


def _norm(path: str) -> str:
    return posixpath.normpath(path.strip()).rstrip("/")


def overlaps(a: str, b: str) -> bool:
    """The same path, or one inside the other (DVC's dependency rule)."""
    return a == b or a.startswith(b + "/") or b.startswith(a + "/")


def _paths(entries: Any, where: str) -> tuple[str, ...]:
    """Paths of a deps/outs list: plain strings or one-key maps {path: {options}}."""
    if entries is None:
        return ()
    if not isinstance(entries, list):
        raise ConfigError(f"{where}: expected a list, got {type(entries).__name__}")
    out = []
    for entry in entries:
        if isinstance(entry, dict) and len(entry) == 1:
            entry = next(iter(entry))
        if not isinstance(entry, str) or not entry.strip():
            raise ConfigError(f"{where}: entry {entry!r} is not a path")
        out.append(_norm(entry))
    return tuple(out)


def _params(entries: Any, where: str) -> tuple[tuple[str, str], ...]:
    """(file, key) pairs of a params list: `key` (params.yaml) or `{file: [keys]}` (an empty list: the whole
    file, key "")."""
    if entries is None:
        return ()
    if not isinstance(entries, list):
        raise ConfigError(f"{where}: expected a list, got {type(entries).__name__}")
    out: list[tuple[str, str]] = []
    for entry in entries:
        if isinstance(entry, str) and entry.strip():
            out.append(("params.yaml", entry.strip()))
        elif isinstance(entry, dict) and len(entry) == 1:
            file, keys = next(iter(entry.items()))
            if keys is None or keys == []:
                out.append((_norm(str(file)), ""))
            elif isinstance(keys, list) and all(isinstance(k, str) for k in keys):
                out.extend((_norm(str(file)), k) for k in keys)
            else:
                raise ConfigError(f"{where}: entry {entry!r}: expected {{file: [keys]}}")
        else:
            raise ConfigError(f"{where}: entry {entry!r} is not a params key")
    return tuple(out)


def params_values(stage: Stage, root: str | Path = ".") -> dict[str, Any]:
    """The values of a stage's declared params, read from the files under `root`: key (params.yaml) or
    "file:key" → value; a whole file "file:" → its document.

    Raises:
        ConfigError: a params file is unreadable, or a key is missing (naming file and key).
    """
    docs: dict[str, Any] = {}
    values: dict[str, Any] = {}
    for file, key in stage.params:
        if file not in docs:
            docs[file] = read_yaml(Path(root) / file)
        node = docs[file]
        for part in key.split(".") if key else ():
            if not isinstance(node, dict) or part not in node:
                raise ConfigError(f"{Path(root) / file}: no key {key!r} (stage {stage.name!r} params)")
            node = node[part]
        values[key if file == "params.yaml" else f"{file}:{key}"] = node
    return values


def _stage(name: str, body: Any, source: str) -> Stage:
    where = f"{source}: stage {name!r}"
    if not isinstance(body, dict):
        raise ConfigError(f"{where}: expected a mapping")
    for unsupported in ("foreach", "matrix", "do"):
        if unsupported in body:
            raise ConfigError(
                f"{where}: `{unsupported}` stages are not supported by the orchestrator compiler"
            )
    if body.get("wdir", ".") not in (".", "./"):
        raise ConfigError(f"{where}: wdir {body['wdir']!r} is not supported (run stages from the repo root)")
    cmd = body.get("cmd")
    if isinstance(cmd, list) and cmd and all(isinstance(c, str) for c in cmd):
        cmd = " && ".join(cmd)
    if not isinstance(cmd, str) or not cmd.strip():
        raise ConfigError(f"{where}: cmd is missing")
    deps = _paths(body.get("deps"), f"{where} deps")
    outs = sum((_paths(body.get(key), f"{where} {key}") for key in OUTPUT_KEYS), ())
    if any("${" in text for text in (cmd, *deps, *outs)):
        raise ConfigError(f"{where}: `${{...}}` templating is not supported by the orchestrator compiler")
    params = _params(body.get("params"), f"{where} params")
    return Stage(name=name, cmd=" ".join(cmd.split()), deps=deps, outs=outs, params=params)


class Pipeline:
    """The stages of a dvc.yaml in topological order (ties: the file's order) and their edges."""

    def __init__(self, stages: list[Stage], source: str = "dvc.yaml") -> None:
        self.source = source
        by_name = {s.name: s for s in stages}
        owner: dict[str, str] = {}
        for stage in stages:
            for out in stage.outs:
                for other, other_stage in owner.items():
                    if overlaps(out, other):
                        raise ConfigError(
                            f"{source}: output {out!r} of stage {stage.name!r} overlaps output {other!r} "
                            f"of stage {other_stage!r}"
                        )
                owner[out] = stage.name
        self._upstream = {
            s.name: tuple(
                sorted({owner[o] for d in s.deps for o in owner if overlaps(d, o) and owner[o] != s.name})
            )
            for s in stages
        }
        self._owner = owner
        order: list[str] = []
        pending = [s.name for s in stages]
        while pending:
            ready = [n for n in pending if all(u in order for u in self._upstream[n])]
            if not ready:
                raise ConfigError(f"{source}: the stages {pending} form a cycle")
            order.append(ready[0])
            pending.remove(ready[0])
        self.stages = {name: by_name[name] for name in order}

    def __getitem__(self, name: str) -> Stage:
        try:
            return self.stages[name]
        except KeyError:
            raise ConfigError(
                f"{self.source}: no stage {name!r} (stages: {', '.join(self.stages)})"
            ) from None

    def upstream(self, name: str) -> tuple[str, ...]:
        """The stages whose outputs `name` depends on, sorted."""
        self[name]
        return self._upstream[name]

    def edges(self) -> set[tuple[str, str]]:
        """(upstream, downstream) pairs: the DVC DAG."""
        return {(up, name) for name in self.stages for up in self._upstream[name]}

    def data_deps(self, name: str) -> tuple[str, ...]:
        """What `dvc pull` fetches before `name` runs: its deps produced by other stages (a dep inside an
        output: the dep; an output inside a dep directory: that output), in the deps' order."""
        pulls: list[str] = []
        for dep in self[name].deps:
            for out, producer in self._owner.items():
                if producer == name or not overlaps(dep, out):
                    continue
                path = dep if dep == out or dep.startswith(out + "/") else out
                if path not in pulls:
                    pulls.append(path)
        return tuple(pulls)

    def record(self, name: str) -> dict[str, Any]:
        """A stage as JSON-ready data: name, cmd, upstream stages, data deps to pull, outputs to push."""
        stage = self[name]
        return {
            "stage": name,
            "cmd": stage.cmd,
            "upstream": list(self.upstream(name)),
            "pull": list(self.data_deps(name)),
            "outs": list(stage.outs),
        }


def parse(doc: Any, source: str = "dvc.yaml") -> Pipeline:
    """A Pipeline from a loaded dvc.yaml document."""
    if not isinstance(doc, dict) or not isinstance(doc.get("stages"), dict) or not doc["stages"]:
        raise ConfigError(f"{source}: no `stages` mapping")
    return Pipeline([_stage(str(n), body, source) for n, body in doc["stages"].items()], source)


def load(path: str | Path = "dvc.yaml") -> Pipeline:
    """Read (YAML 1.2, as DVC does) and parse a dvc.yaml; ConfigError naming the file when unreadable or
    unsupported."""
    return parse(read_yaml(path), str(path))
