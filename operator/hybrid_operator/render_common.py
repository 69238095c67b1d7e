"""Pieces every rendered child shares: names, labels, owner reference, restricted security contexts."""

from __future__ import annotations

from typing import Any

from hybrid_operator.models import API_VERSION, KIND, HybridInference

PREFILL = "prefill"
DECODE = "decode"
PREFILL_PORT = 50051  # gRPC port of the KV transfer (docs/architecture.md "Command line")
KV_DATA_PORT = 50052  # the prefill worker's KV data connection (docs/kv-wire.md "Data connection")
KV_SUFFIX = "kv"  # headless Service <name>-kv: the decode pods' target, one address per prefill pod
MANAGED_BY = "hybrid-inference-operator"
# Non-root identity of the worker images (Dockerfile.prefill / Dockerfile.decode create this user).
WORKER_UID = 10001

Manifest = dict[str, Any]


def child_name(cr: HybridInference, suffix: str) -> str:
    """`<name>-prefill`, `<name>-decode`, `<name>-api`."""
    return f"{cr.name}-{suffix}"


def selector_labels(cr: HybridInference, component: str | None = None) -> dict[str, str]:
    """Labels that select this instance's pods (of one component, when given); never change them."""
    labels = {"app.kubernetes.io/name": "hybrid-inference", "app.kubernetes.io/instance": cr.name}
    if component is not None:
        labels["app.kubernetes.io/component"] = component
    return labels


def labels(cr: HybridInference, component: str | None = None) -> dict[str, str]:
    """Selector labels plus managed-by, for every child object."""
    return {**selector_labels(cr, component), "app.kubernetes.io/managed-by": MANAGED_BY}


def owner_reference(cr: HybridInference) -> dict[str, Any]:
    """Controller owner reference: children are garbage-collected with the HybridInference."""
    if not cr.metadata.uid:
        raise ValueError(f"HybridInference {cr.name}: metadata.uid is missing; read the object from the API")
    return {
        "apiVersion": API_VERSION,
        "kind": KIND,
        "name": cr.name,
        "uid": cr.metadata.uid,
        "controller": True,
        "blockOwnerDeletion": True,
    }


def metadata(cr: HybridInference, name: str, component: str | None = None) -> dict[str, Any]:
    """metadata of a child: name, namespace, labels, owner reference."""
    return {
        "name": name,
        "namespace": cr.namespace,
        "labels": labels(cr, component),
        "ownerReferences": [owner_reference(cr)],
    }


def pod_security_context() -> dict[str, Any]:
    """Pod-level part of the `restricted` Pod Security Standard."""
    return {
        "runAsNonRoot": True,
        "runAsUser": WORKER_UID,
        "runAsGroup": WORKER_UID,
        "fsGroup": WORKER_UID,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def container_security_context() -> dict[str, Any]:
    """Container-level part of `restricted`, plus a read-only root filesystem."""
    return {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
        "seccompProfile": {"type": "RuntimeDefault"},
    }
