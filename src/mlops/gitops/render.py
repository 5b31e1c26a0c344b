"""render: the manifests Argo CD would apply, computed offline from the repository.

`applications()` evaluates the ApplicationSet in deploy/argocd/ as Argo CD's git directory generator
does: one parameter set per folder matching the generator's paths (minus the excluded ones), the
template's strings and its templatePatch filled in with Go templates (`missingkey=error`). Helm's Go
template engine (helm-python-sdk) runs them, so sprig functions behave as in Argo CD.

`render_application()` renders an Application's Helm source like Argo CD's `helm template`: the value
files in order (a missing one is skipped only with `ignoreMissingValueFiles`), then `parameters`, release
name and namespace from the Application. `render_chart()` is the same for a chart and explicit value files.
Tests, `make chart-check` and the deploy rehearsal use these.
"""

from __future__ import annotations

import copy
import fnmatch
import os
import re
import tempfile
from pathlib import Path
from typing import Any

import yaml

from mlops.errors import ConfigError

CHART = Path("charts/model-server")
APPLICATIONSET = Path("deploy/argocd/applicationset.yaml")
ENVS_DIR = Path("deploy/envs")


# ---------------------------------------------------------------- values
def load_yaml(path: str | os.PathLike[str]) -> Any:
    """One YAML document; ConfigError naming the file when unreadable."""
    path = Path(path)
    try:
        return yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as e:
        raise ConfigError(f"{path}: unreadable YAML ({e})".replace("\n", " ")) from e


def merge_values(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Helm's merge of value files: maps merge recursively, anything else is replaced, null deletes."""
    out = copy.deepcopy(base)
    for key, value in override.items():
        if value is None:
            out.pop(key, None)
        elif isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = merge_values(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


def typed_value(value: str) -> Any:
    """A `--set` value as Helm types it (strvals): true/false, null, integers without a leading zero;
    anything else stays a string (Argo CD's `forceString: true` skips this, like `--set-string`)."""
    if value in ("true", "false"):
        return value == "true"
    if value == "null":
        return None
    if re.fullmatch(r"-?(0|[1-9][0-9]*)", value):
        return int(value)
    return value


def set_value(values: dict[str, Any], name: str, value: Any) -> None:
    """`helm --set name=value` for a dotted name (no list indexes: the chart needs none)."""
    *parents, leaf = name.split(".")
    node = values
    for part in parents:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"helm parameter {name!r}: {part!r} is not a map")
    node[leaf] = value


def values_from_files(paths: list[Path], *, ignore_missing: bool = False) -> dict[str, Any]:
    """Merge value files in order; ConfigError naming a missing file unless `ignore_missing`."""
    values: dict[str, Any] = {}
    for path in paths:
        if not path.is_file():
            if ignore_missing:
                continue
            raise ConfigError(f"{path}: values file not found")
        data = load_yaml(path)
        if data is None:
            continue
        if not isinstance(data, dict):
            raise ConfigError(f"{path}: a values file must be a mapping, got {type(data).__name__}")
        values = merge_values(values, data)
    return values


# ---------------------------------------------------------------- helm
def _helm():
    try:
        import helm_python
    except ImportError as e:  # pragma: no cover - a dev dependency
        raise ConfigError("rendering charts needs helm-python-sdk (pip install -e '.[dev]')") from e
    return helm_python


def _render_error(where: str, error: Exception) -> ConfigError:
    text = str(error).replace("\n", " ")
    # Helm prefixes template errors with the template position; keep the message readable
    text = re.sub(r"\s+", " ", text).strip()
    return ConfigError(f"{where}: {text}")


def render_chart(
    chart: str | os.PathLike[str],
    values: dict[str, Any],
    *,
    release: str,
    namespace: str,
    where: str | None = None,
) -> list[dict[str, Any]]:
    """Render a chart to its Kubernetes objects (sorted by kind, then name; NOTES.txt left out).

    Args:
        chart: the chart directory.
        values: the user values (merged over the chart's values.yaml and checked against its schema).
        release: release name. namespace: release namespace.
        where: what the error message names (default: the chart directory).

    Raises:
        ConfigError: a schema violation or a template failure (`required`, `fail`), naming `where`.
    """
    helm = _helm()
    where = where or str(chart)
    try:
        rendered = helm.Chart.load(str(chart)).render(values, name=release, namespace=namespace)
    except helm.HelmError as e:
        raise _render_error(where, e) from e
    objects: list[dict[str, Any]] = []
    for template in sorted(rendered):
        if template.endswith("NOTES.txt"):
            continue
        for doc in yaml.safe_load_all(rendered[template]):
            if doc:
                objects.append(doc)
    return sorted(objects, key=lambda o: (o["kind"], o["metadata"]["name"]))


def render_notes(
    chart: str | os.PathLike[str], values: dict[str, Any], *, release: str, namespace: str
) -> str:
    """NOTES.txt as `helm install` prints it."""
    helm = _helm()
    rendered = helm.Chart.load(str(chart)).render(values, name=release, namespace=namespace)
    return next((text for name, text in rendered.items() if name.endswith("NOTES.txt")), "")


_ACTION = re.compile(r"{{-?(.*?)-?}}", re.S)
_FIELD_CHAIN = re.compile(r"(?:^|(?<=[\s(|]))((?:\.[A-Za-z_]\w*)+)")
_SCOPING = re.compile(r"\b(range|with|define|template|block)\b")


def check_keys(text: str, params: dict[str, Any]) -> None:
    """Go's `missingkey=error` for the field chains (`.a.b`) of a template evaluated on `params`.

    Helm's engine renders a missing map key as empty, so the keys are checked here first. Actions that
    rebind the dot (range, with, define, template, block) and `$` are not supported offline.

    Raises:
        ConfigError: a missing key, or an unsupported action.
    """
    for action in _ACTION.findall(text):
        if _SCOPING.search(action) or "$." in action:
            raise ConfigError(
                f"{{{{{action}}}}}: range/with/define/template/block and $ are not evaluated offline"
            )
        for chain in _FIELD_CHAIN.findall(action):
            node: Any = params
            for key in chain.strip(".").split("."):
                if not isinstance(node, dict) or key not in node:
                    raise ConfigError(f"{{{{{action.strip()}}}}}: map has no entry for key {key!r}")
                node = node[key]


def go_template(texts: list[str], params: dict[str, Any]) -> list[str]:
    """Fill Go templates with `params` as the root object, a missing key being an error (Argo CD's
    goTemplate with goTemplateOptions ["missingkey=error"]), using Helm's engine (text/template + sprig).

    Raises:
        ConfigError: a template error or a missing key.
    """
    helm = _helm()
    for text in texts:
        check_keys(text, params)
    marker = "\n#--mlops-render-split--#\n"
    body = marker.join("{{ with .Values }}" + text + "{{ end }}" for text in texts)
    with tempfile.TemporaryDirectory(prefix="mlops-gotemplate-") as tmp:
        chart = Path(tmp) / "gotemplate"
        (chart / "templates").mkdir(parents=True)
        (chart / "Chart.yaml").write_text("apiVersion: v2\nname: gotemplate\nversion: 0.0.0\n")
        (chart / "templates" / "t.txt").write_text(body)
        try:
            out = helm.Chart.load(str(chart)).render(params, name="gotemplate", namespace="default")
        except helm.HelmError as e:
            raise _render_error("go template", e) from e
    return out["gotemplate/templates/t.txt"].split(marker)


# ---------------------------------------------------------------- Argo CD
def _string_leaves(node: Any, path: tuple = ()) -> list[tuple[tuple, str]]:
    if isinstance(node, dict):
        return [leaf for k, v in node.items() for leaf in _string_leaves(v, (*path, k))]
    if isinstance(node, list):
        return [leaf for i, v in enumerate(node) for leaf in _string_leaves(v, (*path, i))]
    return [(path, node)] if isinstance(node, str) else []


def _put(node: Any, path: tuple, value: Any) -> None:
    for part in path[:-1]:
        node = node[part]
    node[path[-1]] = value


def directory_params(repo: Path, directories: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The git directory generator's parameter sets: folders matching a `path` glob (`*` stays within one
    path segment, as Argo CD's path.Match), minus those matching an `exclude: true` entry; sorted."""
    include = [d["path"] for d in directories if not d.get("exclude")]
    exclude = [d["path"] for d in directories if d.get("exclude")]
    found = set()
    for pattern in include:
        depth = pattern.count("/") + 1
        for candidate in repo.glob(pattern):
            rel = candidate.relative_to(repo).as_posix()
            if candidate.is_dir() and rel.count("/") + 1 == depth and not candidate.name.startswith("."):
                if not any(fnmatch.fnmatchcase(rel, ex) for ex in exclude):
                    found.add(rel)
    params = []
    for rel in sorted(found):
        segments = rel.split("/")
        basename = segments[-1]
        params.append(
            {
                "path": {
                    "path": rel,
                    "basename": basename,
                    "basenameNormalized": re.sub(r"[^a-z0-9-]", "-", basename.lower()),
                    "segments": segments,
                }
            }
        )
    return params


def applications(repo: str | os.PathLike[str] = ".", appset: Path = APPLICATIONSET) -> list[dict[str, Any]]:
    """The Applications the ApplicationSet's git directory generator produces for this repository.

    Raises:
        ConfigError: the ApplicationSet is not of the supported form (one git directory generator,
            goTemplate with missingkey=error) or a template fails.
    """
    return [app for _, app in generate(repo, appset)]


def generate(
    repo: str | os.PathLike[str] = ".", appset: Path = APPLICATIONSET
) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(generator parameters, Application) pairs, as `applications()`.

    Raises:
        ConfigError: the ApplicationSet is not of the supported form (one git directory generator,
            goTemplate with missingkey=error) or a template fails.
    """
    repo = Path(repo)
    path = repo / appset
    spec = (load_yaml(path) or {}).get("spec") or {}
    if not spec.get("goTemplate") or "missingkey=error" not in (spec.get("goTemplateOptions") or []):
        raise ConfigError(f"{path}: spec.goTemplate must be true with goTemplateOptions [missingkey=error]")
    generators = spec.get("generators") or []
    if len(generators) != 1 or not (generators[0].get("git") or {}).get("directories"):
        raise ConfigError(f"{path}: spec.generators: expected one git generator with directories")
    template = spec.get("template")
    if not isinstance(template, dict):
        raise ConfigError(f"{path}: spec.template: missing")
    patch = spec.get("templatePatch")
    apps = []
    for params in directory_params(repo, generators[0]["git"]["directories"]):
        app = copy.deepcopy(template)
        leaves = _string_leaves(app)
        texts = [text for _, text in leaves] + ([patch] if patch else [])
        try:
            filled = go_template(texts, params)
        except ConfigError as e:
            raise ConfigError(f"{path}: template for {params['path']['path']}: {e}") from e
        for (where, _), text in zip(leaves, filled, strict=False):
            _put(app, where, text)
        if patch:
            patched = yaml.safe_load(filled[-1]) or {}
            if not isinstance(patched, dict):
                raise ConfigError(f"{path}: spec.templatePatch must render to a mapping")
            app = merge_values(app, patched)
        apps.append((params, {"apiVersion": "argoproj.io/v1alpha1", "kind": "Application", **app}))
    return apps


def render_application(app: dict[str, Any], repo: str | os.PathLike[str] = ".") -> list[dict[str, Any]]:
    """Render an Application's Helm source from the repository (Argo CD's `helm template`).

    Raises:
        ConfigError: a value file is missing (unless ignored), the values break the chart's schema, or a
            template fails (e.g. no promotion record), naming the Application.
    """
    repo = Path(repo)
    name = app["metadata"]["name"]
    source = app["spec"]["source"]
    helm_source = source.get("helm") or {}
    chart_dir = repo / source["path"]
    files = [chart_dir / f for f in helm_source.get("valueFiles") or []]
    values = values_from_files(files, ignore_missing=bool(helm_source.get("ignoreMissingValueFiles")))
    for param in helm_source.get("parameters") or []:
        value = str(param["value"])
        set_value(values, param["name"], value if param.get("forceString") else typed_value(value))
    return render_chart(
        chart_dir,
        values,
        release=helm_source.get("releaseName") or name,
        namespace=app["spec"]["destination"]["namespace"],
        where=f"Application {name}",
    )


def render_env(env: str, repo: str | os.PathLike[str] = ".") -> list[dict[str, Any]]:
    """Render the Application of `deploy/envs/<env>` as Argo CD would.

    Raises:
        ConfigError: no Application for that folder, or its rendering fails.
    """
    for params, app in generate(repo):
        if params["path"]["basename"] == env:
            return render_application(app, repo)
    raise ConfigError(f"{ENVS_DIR / env}: the ApplicationSet generates no Application for this folder")
