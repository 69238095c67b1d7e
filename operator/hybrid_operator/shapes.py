"""Structural checks of the Kubernetes objects a spec passes through (affinity, pod template parts).

The CRD keeps these fields open (`x-kubernetes-preserve-unknown-fields`), so the API server accepts a
typo in them and only rejects the child Deployment later. Checking their shape here names the bad
field before anything is created. A shape is a dict of field -> shape, a one-item list (array of),
`str`/`int`/`bool`, STRING_MAP (string -> string), or ANY (not checked further).
"""

from __future__ import annotations

from typing import Any

ANY = object()
STRING_MAP = object()
Shape = Any

_LABEL_REQUIREMENT = {"key": str, "operator": str, "values": [str]}
LABEL_SELECTOR = {"matchLabels": STRING_MAP, "matchExpressions": [_LABEL_REQUIREMENT]}
_NODE_TERM = {"matchExpressions": [_LABEL_REQUIREMENT], "matchFields": [_LABEL_REQUIREMENT]}
_POD_TERM = {
    "labelSelector": LABEL_SELECTOR,
    "namespaceSelector": LABEL_SELECTOR,
    "namespaces": [str],
    "topologyKey": str,
    "matchLabelKeys": [str],
    "mismatchLabelKeys": [str],
}
_POD_AFFINITY = {
    "requiredDuringSchedulingIgnoredDuringExecution": [_POD_TERM],
    "preferredDuringSchedulingIgnoredDuringExecution": [{"weight": int, "podAffinityTerm": _POD_TERM}],
}
AFFINITY = {
    "nodeAffinity": {
        "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [_NODE_TERM]},
        "preferredDuringSchedulingIgnoredDuringExecution": [{"weight": int, "preference": _NODE_TERM}],
    },
    "podAffinity": _POD_AFFINITY,
    "podAntiAffinity": _POD_AFFINITY,
}
TOLERATION = {"key": str, "operator": str, "value": str, "effect": str, "tolerationSeconds": int}
TOPOLOGY_SPREAD = {
    "maxSkew": int,
    "topologyKey": str,
    "whenUnsatisfiable": str,
    "labelSelector": LABEL_SELECTOR,
    "minDomains": int,
    "nodeAffinityPolicy": str,
    "nodeTaintsPolicy": str,
    "matchLabelKeys": [str],
}
ENV_VAR = {"name": str, "value": str, "valueFrom": ANY}
ENV_FROM = {"prefix": str, "configMapRef": ANY, "secretRef": ANY}
VOLUME_MOUNT = {"name": str, "mountPath": str, "readOnly": bool, "subPath": str, "subPathExpr": str}


def _type_name(shape: Shape) -> str:
    if isinstance(shape, dict):
        return "an object"
    if isinstance(shape, list):
        return "a list"
    if shape is STRING_MAP:
        return "a map of strings"
    return {str: "a string", int: "an integer", bool: "true or false"}.get(shape, "a value")


def check(value: Any, shape: Shape, path: str) -> list[str]:
    """Problems of `value` against `shape`, each naming the field path (empty: it fits)."""
    if shape is ANY:
        return []
    if isinstance(shape, dict):
        if not isinstance(value, dict):
            return [f"{path}: must be {_type_name(shape)} (got {value!r:.60})"]
        problems = []
        for key, item in value.items():
            if key not in shape:
                known = ", ".join(shape)
                problems.append(f"{path}.{key}: unknown field (known: {known})")
            else:
                problems.extend(check(item, shape[key], f"{path}.{key}"))
        return problems
    if isinstance(shape, list):
        if not isinstance(value, list):
            return [f"{path}: must be a list (got {value!r:.60})"]
        return [p for index, item in enumerate(value) for p in check(item, shape[0], f"{path}[{index}]")]
    if shape is STRING_MAP:
        if isinstance(value, dict) and all(isinstance(v, str) for v in value.values()):
            return []
        return [f"{path}: must be a map of strings (got {value!r:.60})"]
    ok = isinstance(value, shape) and not (shape is int and isinstance(value, bool))
    return [] if ok else [f"{path}: must be {_type_name(shape)} (got {value!r:.60})"]
