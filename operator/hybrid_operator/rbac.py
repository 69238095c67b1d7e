"""The operator's RBAC table: every (group, resource, verb) it may use, and every kind it reads or writes.

kube.KubeClient refuses any call missing from PERMISSIONS; the chart's Roles are derived from and
checked against the same table (tests/operator/test_rbac_least_privilege.py).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from hybrid_operator.models import GROUP, PLURAL, VERSION


@dataclass(frozen=True)
class Permission:
    """One RBAC rule the operator needs; `namespaced=False` marks cluster-scoped resources."""

    group: str
    resource: str
    verbs: tuple[str, ...]
    why: str
    namespaced: bool = True
    cluster_wide: bool = True  # False: only ever granted in a namespaced Role (chart: secretNamespaces)
    own_namespace: bool = False  # True: only in a Role in the operator's own namespace (leader election)


# Every API request the operator process makes, its own and kopf's on its behalf.
PERMISSIONS: tuple[Permission, ...] = (
    Permission(
        GROUP,
        PLURAL,
        ("get", "list", "watch", "patch"),
        "kopf watches them and keeps handler state in annotations; each pass re-reads its object",
    ),
    Permission(GROUP, f"{PLURAL}/status", ("patch",), "status is written once per reconcile pass"),
    Permission(
        GROUP, f"{PLURAL}/finalizers", ("update",), "children's owner references set blockOwnerDeletion"
    ),
    Permission(
        "apps",
        "deployments",
        ("get", "list", "watch", "create", "patch", "delete"),
        "prefill/decode Deployments; watched for availability and deletion; a decode Deployment an "
        "agent replaced (without fallback) is deleted",
    ),
    Permission("", "services", ("get", "create", "patch"), "<name>-prefill and <name>-api Services"),
    Permission("networking.k8s.io", "networkpolicies", ("get", "create", "patch"), "prefill NetworkPolicy"),
    Permission(
        "monitoring.coreos.com",
        "servicemonitors",
        ("get", "create", "patch", "delete"),
        "optional ServiceMonitor; deleted when spec.metrics.serviceMonitor is switched off",
    ),
    Permission(
        "cert-manager.io",
        "certificates",
        ("get", "create", "patch"),
        "the KV link's Certificate when kvTransfer.tls.certManager is set",
    ),
    Permission(
        "",
        "secrets",
        ("get",),
        "checks that the KV TLS Secret exists and has its keys; granted per namespace (a Role), never "
        "cluster-wide: without it the check is skipped",
        cluster_wide=False,
    ),
    Permission("", "events", ("create",), "events on the HybridInference (operator and kopf)"),
    Permission("", "configmaps", ("get", "create", "patch", "delete"), "decode agent assignments"),
    Permission(
        "discovery.k8s.io",
        "endpointslices",
        ("get", "create", "patch", "delete"),
        "<name>-api EndpointSlice to a decode agent's worker",
    ),
    Permission(
        "coordination.k8s.io",
        "leases",
        ("get", "list"),
        "reads a decode agent's Lease (state, address); auto placement lists the agents' Leases",
    ),
    Permission(
        "coordination.k8s.io",
        "leases",
        ("get", "create", "patch"),
        "the operator's leader-election Lease (leader.py); get/patch only that name",
        own_namespace=True,
    ),
    Permission(
        "", "nodes", ("list",), "placement reads node labels, taints and GPU capacity", namespaced=False
    ),
)

# apiVersion, kind -> (group, plural) of every kind the operator reads or writes.
KINDS: dict[tuple[str, str], tuple[str, str]] = {
    ("apps/v1", "Deployment"): ("apps", "deployments"),
    ("v1", "Service"): ("", "services"),
    ("networking.k8s.io/v1", "NetworkPolicy"): ("networking.k8s.io", "networkpolicies"),
    ("monitoring.coreos.com/v1", "ServiceMonitor"): ("monitoring.coreos.com", "servicemonitors"),
    ("cert-manager.io/v1", "Certificate"): ("cert-manager.io", "certificates"),
    ("v1", "Secret"): ("", "secrets"),
    ("v1", "Event"): ("", "events"),
    ("v1", "Node"): ("", "nodes"),
    ("v1", "ConfigMap"): ("", "configmaps"),
    ("discovery.k8s.io/v1", "EndpointSlice"): ("discovery.k8s.io", "endpointslices"),
    ("coordination.k8s.io/v1", "Lease"): ("coordination.k8s.io", "leases"),
    (f"{GROUP}/{VERSION}", "HybridInference"): (GROUP, PLURAL),
}


def allowed(group: str, resource: str, verb: str, permissions: Sequence[Permission] = PERMISSIONS) -> bool:
    """Whether `permissions` (the operator's by default) grant `verb` on `group/resource`."""
    return any(p.group == group and p.resource == resource and verb in p.verbs for p in permissions)
