"""Per-role pod template: which pod fields a user may add, how they merge, which the operator owns.

Rules (docs/kubernetes.md, "Pod template"):
- metadata.labels / annotations merge into the pod's; the app.kubernetes.io/* selector labels stay ours.
- spec scalars a user sets: serviceAccountName, priorityClassName, schedulerName,
  terminationGracePeriodSeconds, dnsConfig.
- spec lists appended after the operator's: imagePullSecrets, tolerations, topologySpreadConstraints,
  hostAliases, volumes (names must not clash with model, tmp, cache, tls, hf-token).
- containers: at most one, named after the role; its env, envFrom and volumeMounts are appended. Env
  names the operator sets (HYBRID_INFERENCE_*, HF_*, HOME, XDG_CACHE_HOME) are refused: a per-role
  HYBRID_INFERENCE_DTYPE would make the two roles' weights differ (DTypeMismatch).
- Everything else is the operator's (image, command, ports, probes, resources, security contexts,
  nodeSelector, affinity, runtimeClassName, automountServiceAccountToken, host namespaces): refused,
  naming the spec field to use instead where there is one.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from hybrid_operator.models import PodTemplate
from hybrid_operator.shapes import ANY, ENV_FROM, ENV_VAR, TOLERATION, TOPOLOGY_SPREAD, VOLUME_MOUNT, check

SCALARS: dict[str, Any] = {
    "serviceAccountName": str,
    "priorityClassName": str,
    "schedulerName": str,
    "terminationGracePeriodSeconds": int,
    "dnsConfig": ANY,
}
LISTS: dict[str, Any] = {
    "imagePullSecrets": [{"name": str}],
    "tolerations": [TOLERATION],
    "topologySpreadConstraints": [TOPOLOGY_SPREAD],
    "hostAliases": [{"ip": str, "hostnames": [str]}],
    "volumes": [ANY],
}
CONTAINER_LISTS: dict[str, Any] = {"env": [ENV_VAR], "envFrom": [ENV_FROM], "volumeMounts": [VOLUME_MOUNT]}
# Owned pod fields and where to set them instead.
OWNED = {
    "nodeSelector": "spec.{role}.nodeSelector",
    "affinity": "spec.{role}.affinity",
    "runtimeClassName": "spec.{role}.runtimeClassName",
    "image": "spec.{role}.image",
    "imagePullPolicy": "spec.{role}.imagePullPolicy",
    "resources": "spec.{role}.resources and spec.{role}.gpus",
}
RESERVED_VOLUMES = ("model", "tmp", "cache", "tls", "hf-token")
SELECTOR_LABEL_PREFIX = "app.kubernetes.io/"
OWNED_ENV_PREFIXES = ("HYBRID_INFERENCE_", "HF_")
OWNED_ENV = ("HOME", "XDG_CACHE_HOME")


class PodTemplateProblem(ValueError):
    """A pod template field the operator refuses; `reason` is DTypeMismatch or PodTemplateRejected."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def _where(role: str, field: str) -> str:
    return f"{role}.podTemplate.spec.{field}"


def _owned(role: str, key: str) -> str:
    instead = OWNED.get(key)
    fix = f"set {instead.format(role=role)} instead" if instead else "the operator sets it"
    return f"{_where(role, key)}: owned by the operator; {fix}"


def _container_problems(role: str, containers: Any, mount_paths: set[str]) -> tuple[list[str], bool]:
    """Problems of spec.containers, and whether one of them is a per-role dtype."""
    if not isinstance(containers, list) or len(containers) > 1:
        return [f"{_where(role, 'containers')}: at most one container, named {role!r}"], False
    problems, dtype = [], False
    for container in containers:
        if not isinstance(container, dict) or container.get("name") != role:
            return [f"{_where(role, 'containers')}[0].name: must be {role!r}"], False
        path = _where(role, "containers[0]")
        for key, value in container.items():
            if key == "name":
                continue
            if key not in CONTAINER_LISTS:
                problems.append(_owned(role, key).replace(_where(role, key), f"{path}.{key}"))
                continue
            problems += check(value, CONTAINER_LISTS[key], f"{path}.{key}")
        for env in container.get("env") or []:
            name = env.get("name", "") if isinstance(env, dict) else ""
            if name.startswith(OWNED_ENV_PREFIXES) or name in OWNED_ENV:
                dtype = dtype or name == "HYBRID_INFERENCE_DTYPE"
                problems.append(f"{path}.env {name}: set by the operator; use the HybridInference spec")
        for mount in container.get("volumeMounts") or []:
            if isinstance(mount, dict) and mount.get("mountPath") in mount_paths:
                problems.append(f"{path}.volumeMounts {mount['mountPath']}: the operator mounts there")
    return problems, dtype


def check_template(role: str, template: PodTemplate | None, mount_paths: set[str]) -> None:
    """Raise PodTemplateProblem naming every refused or malformed field (nothing: it merges cleanly)."""
    if template is None:
        return
    problems = [
        f"{role}.podTemplate.metadata.labels.{key}: the operator's selector label; choose another key"
        for key in template.metadata.labels
        if key.startswith(SELECTOR_LABEL_PREFIX)
    ]
    dtype = False
    for key, value in template.spec.items():
        if key == "containers":
            found, dtype = _container_problems(role, value, mount_paths)
            problems += found
        elif key in SCALARS:
            problems += check(value, SCALARS[key], _where(role, key))
        elif key in LISTS:
            problems += check(value, LISTS[key], _where(role, key))
        else:
            problems.append(_owned(role, key))
    for volume in template.spec.get("volumes") or []:
        name = volume.get("name") if isinstance(volume, dict) else None
        if not isinstance(name, str) or name in RESERVED_VOLUMES:
            problems.append(f"{_where(role, 'volumes')} {name!r}: needs a name other than {RESERVED_VOLUMES}")
    if problems:
        if dtype:
            problems.insert(0, "the operator gives both roles one dtype (the KV fingerprint must match)")
            raise PodTemplateProblem("DTypeMismatch", "; ".join(problems) + "; set spec.model.dtype instead")
        raise PodTemplateProblem("PodTemplateRejected", "; ".join(problems))


def merge(role: str, template: PodTemplate | None, pod: Mapping[str, Any]) -> dict[str, Any]:
    """The operator's pod template (`{"metadata": ..., "spec": ...}`) with the user's fields merged in."""
    result: dict[str, Any] = {"metadata": dict(pod["metadata"]), "spec": dict(pod["spec"])}
    if template is None:
        return result
    meta = result["metadata"]
    meta["labels"] = {**template.metadata.labels, **meta.get("labels", {})}
    if template.metadata.annotations or meta.get("annotations"):
        meta["annotations"] = {**template.metadata.annotations, **meta.get("annotations", {})}
    spec = result["spec"]
    for key, value in template.spec.items():
        if key in SCALARS:
            spec[key] = value
        elif key in LISTS:
            spec[key] = [*spec.get(key, []), *value]
    for extra in template.spec.get("containers") or []:
        containers = [dict(c) for c in spec["containers"]]
        ours = next(c for c in containers if c["name"] == role)
        for key in CONTAINER_LISTS:
            if extra.get(key):
                ours[key] = [*ours.get(key, []), *extra[key]]
        spec["containers"] = containers
    return result
