"""rehearse: run an environment's rendered pod under Docker as the kubelet would, and check that it serves.

The environment's Application is computed from the ApplicationSet and its chart rendered
(`mlops.gitops.render`), exactly as Argo CD would; extra Helm parameters may be set like `argocd app set
-p`. From the Deployment's (or Rollout's) pod template, each init container runs to completion, then the
server container starts, each as `docker run` translated from the rendering by `mlops.gitops.pod`
(command, args, env, user, read-only root, capabilities, volumes; no resources; host network, a wildcard
bind address made 127.0.0.1). No registry is pulled from: `images` tags local images under the rendered
references; the Secrets the pod reads are given as `secrets`.

Then: the readiness probe's path answers 200, the startup and liveness paths too, an inference request
built from the fetched model's feature spec (model.json) succeeds, and the version the server reports is
the version of the environment's promotion record (and fetch-model's registry.json has its sha256).
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from mlops.errors import ConfigError, RehearsalFailed
from mlops.gitops import record as rec
from mlops.gitops.pod import Docker, Pod, config_data, pod_template, provide_images

log = logging.getLogger(__name__)


# ---------------------------------------------------------------- command-line values
def pair(text: str, option: str) -> tuple[str, str]:
    """`A=B` -> (A, B); ConfigError naming the option otherwise."""
    left, sep, right = text.partition("=")
    if not sep or not left:
        raise ConfigError(f"{option} {text!r}: expected NAME=VALUE")
    return left, right


def secrets(items: Iterable[str]) -> dict[str, dict[str, str]]:
    """`SECRET/KEY=VALUE` items -> {secret: {key: value}} (the cluster's Secrets, given for the rehearsal)."""
    out: dict[str, dict[str, str]] = {}
    for item in items:
        ref, value = pair(item, "--secret")
        name, sep, key = ref.partition("/")
        if not sep or not name or not key:
            raise ConfigError(f"--secret {ref!r}: expected SECRET/KEY=VALUE")
        out.setdefault(name, {})[key] = value
    return out


# ---------------------------------------------------------------- probes and checks
def _http(method: str, url: str, body: Any = None, timeout: float = 5) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as resp:  # noqa: S310 - loopback only
            raw = resp.read()
            status = resp.status
    except urllib.error.HTTPError as e:
        raw, status = e.read(), e.code
    try:
        return status, json.loads(raw) if raw else None
    except ValueError:
        return status, raw.decode(errors="replace")


def probe_url(container: dict[str, Any], probe: str) -> str | None:
    """http://127.0.0.1:<port><path> of a container's httpGet probe (named ports resolved), or None."""
    get = (container.get(probe) or {}).get("httpGet")
    if not get:
        return None
    port = get["port"]
    if isinstance(port, str) and not port.isdigit():
        ports = {p.get("name"): p["containerPort"] for p in container.get("ports") or []}
        if port not in ports:
            raise RehearsalFailed(
                f"container {container['name']!r}: {probe} names port {port!r}, not declared"
            )
        port = ports[port]
    return f"http://127.0.0.1:{port}{get.get('path', '/')}"


def example_rows(features: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Two rows from the model's feature spec: each feature at its low end, then at its high end."""
    rows: list[dict[str, Any]] = [{}, {}]
    for f in features:
        if f.get("kind") == "categorical" or f.get("dtype") == "BYTES":
            cats = f.get("categories") or []
            if not cats:
                raise RehearsalFailed(f"model.json: feature {f['name']!r} has no categories")
            values = [cats[0], cats[-1]]
        else:
            low = f.get("min") if f.get("min") is not None else 0
            high = f.get("max") if f.get("max") is not None else low + 1
            mid = (low + high) / 2
            values = [low, mid]
            if str(f.get("dtype", "")).startswith(("INT", "UINT")):
                values = [int(low), int(mid)]
            else:
                values = [float(v) for v in values]
        for row, value in zip(rows, values, strict=True):
            row[f["name"]] = value
    return rows


def infer_body(features: list[dict[str, Any]], rows: list[dict[str, Any]]) -> dict[str, Any]:
    """An OIP request with one [n] tensor per feature, datatypes from the spec."""
    return {
        "inputs": [
            {
                "name": f["name"],
                "shape": [len(rows)],
                "datatype": "BYTES" if f.get("kind") == "categorical" else f.get("dtype", "FP64"),
                "data": [r[f["name"]] for r in rows],
            }
            for f in features
        ]
    }


def _wait_ready(docker: Docker, name: str, url: str, timeout: float) -> float:
    started = time.monotonic()
    while True:
        try:
            status, _ = _http("GET", url, timeout=2)
            if status == 200:
                return time.monotonic() - started
        except OSError:
            pass
        state = docker(
            "inspect", "-f", "{{.State.Running}} {{.State.ExitCode}}", name, check=False
        ).stdout.split()
        if state[:1] != ["true"]:
            raise RehearsalFailed(
                f"container {name} exited ({' '.join(state[1:])}) before ready:\n{docker.logs(name)}"
            )
        if time.monotonic() - started > timeout:
            raise RehearsalFailed(f"{url}: not ready after {timeout:.0f} s:\n{docker.logs(name)}")
        time.sleep(0.3)


# ---------------------------------------------------------------- the rehearsal
def rehearse_pod(
    manifests: list[dict[str, Any]],
    record: dict[str, Any],
    images: Mapping[str, str],
    secrets: Mapping[str, Mapping[str, str]],
    docker: Docker,
    timeout: float = 180.0,
) -> dict[str, Any]:
    """Run the rendered pod (init containers, then the first container) and check it (module docstring).

    Args:
        manifests: the rendered objects of the Application.
        record: the environment's promotion record (name, version, sha256).
        images: rendered image reference -> local image to tag under it.
        secrets: {Secret name: {key: value}} for the Secrets the pod reads.
        docker: the docker CLI wrapper.
        timeout: seconds for an init container to finish and for the server to become ready.

    Returns:
        {pod, images, init: [names], ready_s, served: {model, version}, registry: fetch-model's record,
         rows, changed: [what differs from the rendering]}.

    Raises:
        RehearsalFailed: any step failed (exit 5); the message carries the container's log tail.
    """
    workload, template = pod_template(manifests)
    spec = template["spec"]
    inits, containers = spec.get("initContainers") or [], spec.get("containers") or []
    if not containers:
        raise RehearsalFailed(f"{workload['kind']} {workload['metadata']['name']}: no containers")
    server = containers[0]
    provide_images(docker, [c["image"] for c in [*inits, server]], images)
    pod_name = f"rehearse-{workload['metadata']['name']}-{os.getpid()}"
    namespace = workload["metadata"].get("namespace", "default")
    with tempfile.TemporaryDirectory(prefix="mlops-rehearse-") as tmp:
        pod = Pod(template, pod_name, namespace, Path(tmp), secrets, config_data(manifests))
        started: list[str] = []
        try:
            for init in inits:
                user = docker("image", "inspect", "-f", "{{.Config.User}}", init["image"]).stdout.strip()
                cmd = pod.docker_run(init, user, detach=False)
                log.info("rehearse: init container %s: docker %s", init["name"], " ".join(cmd))
                started.append(cmd[2])
                out = docker(*cmd, timeout=timeout, check=False)
                if out.returncode != 0:
                    raise RehearsalFailed(
                        f"init container {init['name']!r} exited {out.returncode}:\n{(out.stdout + out.stderr)[-3000:]}"
                    )
            user = docker("image", "inspect", "-f", "{{.Config.User}}", server["image"]).stdout.strip()
            cmd = pod.docker_run(server, user, detach=True)
            log.info("rehearse: server container %s: docker %s", server["name"], " ".join(cmd))
            started.append(cmd[2])
            docker(*cmd)
            ready_url = probe_url(server, "readinessProbe")
            if ready_url is None:
                raise RehearsalFailed(f"container {server['name']!r}: no httpGet readinessProbe to check")
            ready_s = _wait_ready(docker, cmd[2], ready_url, timeout)
            for probe in ("startupProbe", "livenessProbe"):
                url = probe_url(server, probe)
                if url is not None and _http("GET", url)[0] != 200:
                    raise RehearsalFailed(f"{probe} {url}: not 200 once ready")
            result = _check_serving(pod, server, ready_url, record)
            return {
                "pod": pod_name,
                "images": sorted({c["image"] for c in [*inits, server]}),
                "init": [c["name"] for c in inits],
                "ready_s": round(ready_s, 2),
                "changed": pod.changed,
                **result,
            }
        finally:
            for name in started:
                docker("rm", "-f", name, check=False)
            # files written by the pod's users: make them removable for the temp dir's cleanup
            for path in Path(tmp).rglob("*"):
                if path.is_dir():
                    path.chmod(0o777)


def _check_serving(
    pod: Pod, server: dict[str, Any], ready_url: str, record: dict[str, Any]
) -> dict[str, Any]:
    """Infer with rows from the fetched model's spec; the served version and sha256 are the record's."""
    fetched = [p for p in pod.volumes.values() if (p / "model.json").is_file()]
    if not fetched:
        raise RehearsalFailed("no volume holds model.json after the init containers ran (fetch-model)")
    meta = json.loads((fetched[0] / "model.json").read_text())
    registry_json = fetched[0] / "registry.json"
    fetched_record = json.loads(registry_json.read_text()) if registry_json.is_file() else None
    version, sha = str(record["version"]), record["sha256"]
    if meta["weights"]["sha256"] != sha:
        raise RehearsalFailed(f"fetched weights {meta['weights']['sha256'][:12]}…, record says {sha[:12]}…")
    if fetched_record is not None and (str(fetched_record.get("version")), fetched_record.get("sha256")) != (
        version,
        sha,
    ):
        raise RehearsalFailed(f"fetch-model fetched {fetched_record}, the record names version {version}")
    base = ready_url.split("/v2/")[0] if "/v2/" in ready_url else ready_url.rsplit("/", 1)[0]
    model = meta["name"]
    rows = example_rows(meta["features"])
    status, body = _http("POST", f"{base}/v2/models/{model}/infer", infer_body(meta["features"], rows))
    if status != 200 or not isinstance(body, dict):
        raise RehearsalFailed(f"infer: HTTP {status}: {str(body)[:500]}")
    outputs = {o["name"]: o for o in body.get("outputs") or []}
    if not outputs or any(len(o.get("data") or []) != len(rows) for o in outputs.values()):
        raise RehearsalFailed(f"infer: expected {len(rows)} values per output, got {body}")
    served = str(body.get("model_version"))
    if served != version:
        raise RehearsalFailed(f"the server reports model version {served!r}; the record says {version!r}")
    status, info = _http("GET", f"{base}/v2/models/{model}")
    if status != 200:
        raise RehearsalFailed(f"model metadata /v2/models/{model}: HTTP {status}")
    return {
        "served": {"model": model, "version": served, "outputs": sorted(outputs)},
        "registry": fetched_record,
        "rows": len(rows),
        "metadata": info,
    }


def run(
    repo: str | os.PathLike[str],
    env: str,
    images: Mapping[str, str] | None = None,
    secrets: Mapping[str, Mapping[str, str]] | None = None,
    parameters: Mapping[str, str] | None = None,
    timeout: float = 180.0,
    docker_env: Mapping[str, str] | None = None,
) -> dict[str, Any]:
    """Render `env`'s Application from the checkout at `repo` and rehearse its pod under Docker.

    Args:
        repo: the git checkout (deploy/, charts/).
        env: the environment folder under deploy/envs/.
        images: rendered image reference -> local image.
        secrets: the Secrets the pod reads.
        parameters: extra Helm parameters (name -> value), added to the Application's like `argocd app set -p`.
        timeout: seconds for each init container and for readiness.
        docker_env: environment of the docker CLI (DOCKER_HOST); default this process's.

    Returns:
        rehearse_pod's result plus env, application, record {name, version, sha256}.
    """
    from mlops.gitops import render

    repo = Path(repo)
    record = rec.read(rec.record_path(repo, env))
    if record is None:
        raise RehearsalFailed(f"{rec.record_path(repo, env)}: no promotion record; promote a version first")
    app = next((a for p, a in render.generate(repo) if p["path"]["basename"] == env), None)
    if app is None:
        raise ConfigError(
            f"{rec.ENVS_DIR / env}: the ApplicationSet generates no Application for this folder"
        )
    helm = app["spec"]["source"].setdefault("helm", {})
    helm["parameters"] = [
        *(helm.get("parameters") or []),
        *({"name": k, "value": v} for k, v in (parameters or {}).items()),
    ]
    manifests = render.render_application(app, repo)
    facts = {"name": record.name, "version": record.version, "sha256": record.sha256}
    result = rehearse_pod(manifests, facts, images or {}, secrets or {}, Docker(docker_env), timeout)
    log.info(
        "rehearse: %s serves %s version %s (ready in %.1f s)",
        env,
        record.name,
        record.version,
        result["ready_s"],
    )
    return {"env": env, "application": app["metadata"]["name"], "record": facts, **result}
