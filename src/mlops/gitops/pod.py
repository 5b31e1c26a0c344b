"""pod: a rendered pod template -> `docker run` command lines, as the kubelet would run its containers.

`Pod` lays out the pod's volumes as host directories (emptyDir: one directory shared by the pod's
containers; ConfigMap/Secret: files) and translates each container: command -> entrypoint, args, env
(values, Secret/ConfigMap references, fieldRefs, envFrom), runAsUser/runAsGroup, fsGroup and
supplementalGroups as groups, runAsNonRoot enforced, read-only root filesystem, capabilities,
no-new-privileges, seccomp, working directory, volume mounts (read-only where declared). Resources are
left out. Containers use the host's network; a wildcard bind address in the command line becomes
127.0.0.1 (recorded in `Pod.changed`). Used by `mlops.gitops.rehearse`.
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from mlops.errors import RehearsalFailed

WORKLOADS = ("Deployment", "Rollout", "StatefulSet")
WILDCARD = "0.0.0.0"


# ---------------------------------------------------------------- manifests -> docker run
def pod_template(manifests: list[dict[str, Any]]) -> tuple[dict[str, Any], dict[str, Any]]:
    """(workload, pod template) of the one Deployment/Rollout/StatefulSet among the manifests."""
    found = [m for m in manifests if m.get("kind") in WORKLOADS]
    if len(found) != 1:
        kinds = sorted(m.get("kind", "?") for m in manifests)
        raise RehearsalFailed(f"expected one workload ({'/'.join(WORKLOADS)}) in the manifests, got {kinds}")
    workload = found[0]
    return workload, workload["spec"]["template"]


def config_data(manifests: list[dict[str, Any]]) -> dict[str, dict[str, str]]:
    """ConfigMaps rendered with the chart: {name: data}."""
    return {
        m["metadata"]["name"]: {**(m.get("data") or {})} for m in manifests if m.get("kind") == "ConfigMap"
    }


class Pod:
    """One rendered pod on this machine: its volumes as host directories, its containers as docker runs."""

    def __init__(
        self,
        template: dict[str, Any],
        name: str,
        namespace: str,
        root: Path,
        secrets: Mapping[str, Mapping[str, str]],
        configmaps: Mapping[str, Mapping[str, str]],
    ):
        self.spec = template["spec"]
        self.labels = (template.get("metadata") or {}).get("labels") or {}
        self.name, self.namespace, self.root = name, namespace, root
        self.secrets, self.configmaps = secrets, configmaps
        self.volumes = {v["name"]: self._volume(v) for v in self.spec.get("volumes") or []}
        self.changed: list[str] = []

    def _volume(self, volume: dict[str, Any]) -> Path:
        path = self.root / "volumes" / volume["name"]
        path.mkdir(parents=True)
        if "emptyDir" in volume:
            path.chmod(0o777)  # an emptyDir is writable by the pod's users, as in Kubernetes
            return path
        source = volume.get("configMap") or volume.get("secret")
        if source is None:
            kinds = sorted(set(volume) - {"name"})
            raise RehearsalFailed(f"volume {volume['name']!r}: {kinds} not supported by the rehearsal")
        if "configMap" in volume:
            data = self.configmaps.get(source["name"])
        else:
            data = self.secrets.get(source["secretName"])
        if data is None and not source.get("optional"):
            raise RehearsalFailed(f"volume {volume['name']!r}: {source} not provided")
        for item_key, value in (data or {}).items():
            (path / item_key).write_text(value)
            (path / item_key).chmod(0o444)
        path.chmod(0o555)
        return path

    def _env(self, container: dict[str, Any]) -> list[str]:
        env: dict[str, str] = {}
        for source in container.get("envFrom") or []:
            if "secretRef" in source:
                data = self.secrets.get(source["secretRef"]["name"])
                what = f"Secret {source['secretRef']['name']!r}"
            else:
                data = self.configmaps.get(source["configMapRef"]["name"])
                what = f"ConfigMap {source['configMapRef']['name']!r}"
            optional = (source.get("secretRef") or source.get("configMapRef") or {}).get("optional")
            if data is None and not optional:
                raise RehearsalFailed(f"container {container['name']!r}: envFrom {what} not provided")
            env.update({source.get("prefix", "") + k: v for k, v in (data or {}).items()})
        for var in container.get("env") or []:
            env[var["name"]] = self._env_value(container["name"], var)
        return [arg for k, v in env.items() for arg in ("-e", f"{k}={v}")]

    def _env_value(self, container: str, var: dict[str, Any]) -> str:
        if "value" in var:
            return str(var["value"])
        ref = var.get("valueFrom") or {}
        if "secretKeyRef" in ref or "configMapKeyRef" in ref:
            key_ref = ref.get("secretKeyRef") or ref["configMapKeyRef"]
            store = self.secrets if "secretKeyRef" in ref else self.configmaps
            value = (store.get(key_ref["name"]) or {}).get(key_ref["key"])
            if value is None:
                raise RehearsalFailed(f"container {container!r}: env {var['name']}: {key_ref} not provided")
            return value
        if "fieldRef" in ref:
            fields = {
                "metadata.name": self.name,
                "metadata.namespace": self.namespace,
                "status.podIP": "127.0.0.1",
                "status.hostIP": "127.0.0.1",
                "spec.nodeName": "rehearsal",
                "spec.serviceAccountName": self.spec.get("serviceAccountName", "default"),
            }
            path = ref["fieldRef"]["fieldPath"]
            if path in fields:
                return fields[path]
        raise RehearsalFailed(
            f"container {container!r}: env {var['name']}: {ref} not supported by the rehearsal"
        )

    def _security(self, container: dict[str, Any], image_user: str) -> list[str]:
        pod_ctx = self.spec.get("securityContext") or {}
        ctx = {**pod_ctx, **(container.get("securityContext") or {})}
        args: list[str] = []
        uid, gid = ctx.get("runAsUser"), ctx.get("runAsGroup")
        if ctx.get("runAsNonRoot"):
            effective = str(uid) if uid is not None else image_user.split(":")[0]
            if not effective.isdigit() or int(effective) == 0:
                raise RehearsalFailed(
                    f"container {container['name']!r}: runAsNonRoot, but it would run as user "
                    f"{effective or 'root'!r} (the kubelet refuses a non-numeric or root user)"
                )
        if uid is not None:
            args += ["--user", f"{uid}:{gid}" if gid is not None else str(uid)]
        for group in [pod_ctx.get("fsGroup"), *(pod_ctx.get("supplementalGroups") or [])]:
            if group is not None:
                args += ["--group-add", str(group)]
        if ctx.get("readOnlyRootFilesystem"):
            args.append("--read-only")
        if ctx.get("allowPrivilegeEscalation") is False:
            args += ["--security-opt", "no-new-privileges"]
        caps = ctx.get("capabilities") or {}
        args += [a for cap in caps.get("drop") or [] for a in ("--cap-drop", cap)]
        args += [a for cap in caps.get("add") or [] for a in ("--cap-add", cap)]
        if ctx.get("privileged"):
            raise RehearsalFailed(f"container {container['name']!r}: privileged containers are not rehearsed")
        profile = (ctx.get("seccompProfile") or {}).get("type", "RuntimeDefault")
        if profile == "Unconfined":
            args += ["--security-opt", "seccomp=unconfined"]
        return args  # RuntimeDefault: Docker's default seccomp profile

    def _mounts(self, container: dict[str, Any]) -> list[str]:
        args = []
        for mount in container.get("volumeMounts") or []:
            if mount["name"] not in self.volumes:
                raise RehearsalFailed(
                    f"container {container['name']!r}: volume {mount['name']!r} not declared"
                )
            source = self.volumes[mount["name"]]
            if mount.get("subPath"):
                source = source / mount["subPath"]
            mode = ":ro" if mount.get("readOnly") else ""
            args += ["-v", f"{source}:{mount['mountPath']}{mode}"]
        return args

    def docker_run(self, container: dict[str, Any], image_user: str, detach: bool) -> list[str]:
        """The `docker run` command line of one container of this pod (host network, no resources)."""
        name = f"{self.name}-{container['name']}"
        args = ["run", "--name", name, "--network", "host"]
        args += ["--label", f"mlops.rehearsal.pod={self.name}"]
        args += ["-d"] if detach else []
        args += self._security(container, image_user)
        args += self._env(container)
        args += self._mounts(container)
        if container.get("workingDir"):
            args += ["-w", container["workingDir"]]
        command = list(container.get("command") or [])
        rest = [str(a) for a in container.get("args") or []]
        if command:
            args += ["--entrypoint", command[0]]
            rest = command[1:] + rest
        if WILDCARD in rest:
            self.changed.append(f"{container['name']}: bind address {WILDCARD} -> 127.0.0.1 (host network)")
            rest = ["127.0.0.1" if a == WILDCARD else a for a in rest]
        return [*args, container["image"], *rest]


# ---------------------------------------------------------------- docker
class Docker:
    """The docker CLI on DOCKER_HOST (or the default socket)."""

    def __init__(self, env: Mapping[str, str] | None = None):
        self.env = dict(env if env is not None else os.environ)

    def __call__(self, *args: str, timeout: float = 600, check: bool = True) -> subprocess.CompletedProcess:
        try:
            out = subprocess.run(
                ["docker", *args], env=self.env, capture_output=True, text=True, timeout=timeout
            )
        except FileNotFoundError as e:
            raise RehearsalFailed("docker CLI not found (apt-get install docker.io)") from e
        except subprocess.TimeoutExpired as e:
            raise RehearsalFailed(f"docker {args[0]} {args[-1]}: no answer after {timeout:.0f} s") from e
        if check and out.returncode != 0:
            raise RehearsalFailed(f"docker {' '.join(args[:3])}: {out.stderr.strip()[-1500:]}")
        return out

    def logs(self, name: str) -> str:
        out = self("logs", "--tail", "60", name, check=False)
        return (out.stdout + out.stderr)[-3000:]


def provide_images(docker: Docker, wanted: Iterable[str], images: Mapping[str, str]) -> None:
    """Tag local images under the rendered references; each rendered image must then exist locally."""
    for ref in sorted(set(wanted)):
        local = images.get(ref)
        if local:
            if "@" in ref:
                raise RehearsalFailed(
                    f"image {ref}: pinned by digest; rehearse with a tag (--set <image>.digest=)"
                )
            docker("tag", local, ref)
        if docker("image", "inspect", ref, check=False).returncode != 0:
            raise RehearsalFailed(
                f"image {ref}: not in the local engine (build it, or map it with --image {ref}=LOCAL)"
            )
