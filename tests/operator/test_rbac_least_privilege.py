"""RBAC: what the operator's code uses, kube.PERMISSIONS, and the chart's roles are the same set.

"Used" is derived, not declared: the literal API calls in kube.py and the operator's agent modules
(AST), the kinds reconcile applies (every rendered sample, agent children included), the resources
kopf's registered handlers watch, and kopf's own writes.
"""

from __future__ import annotations

import ast
import inspect
from collections.abc import Iterable
from typing import Any

import hybrid_operator.handlers  # noqa: F401  (registers the kopf handlers)
import kopf
import pytest
import yaml
from crd_schema import ROOT
from helm_render import chart_objects, render_chart
from hybrid_operator import agent_auto, agent_world, kube, leader, reconcile, reconcile_agent
from hybrid_operator.agent_contract import AgentLease, WorkerPhase, WorkerReport
from hybrid_operator.agent_world import LeaseReading, judge
from hybrid_operator.config import OperatorConfig
from hybrid_operator.models import parse
from hybrid_operator.placement import NodePlacement
from hybrid_operator.render import render as render_children
from hybrid_operator.render_agent import adapt, assignment, assignment_data, endpoint_slice

Rule = tuple[str, str, str]  # (apiGroup, resource, verb)
# KubeClient methods that take (apiVersion, kind, ...) and the RBAC verb each one needs.
CLIENT_VERBS = {
    "get": "get",
    "create": "create",
    "list_all": "list",
    "watch": "watch",
    "merge_patch": "patch",
    "delete_owned": "delete",
}


def expand(rules: Iterable[dict[str, Any]]) -> set[Rule]:
    return {
        (g, r, v)
        for rule in rules
        for g in rule["apiGroups"]
        for r in rule["resources"]
        for v in rule["verbs"]
    }


def declared(namespaced: bool | None = None, own_namespace: bool | None = False) -> set[Rule]:
    """Rules of the table; by default those for the watched scope (not the operator's own namespace)."""
    return {
        (p.group, p.resource, verb)
        for p in kube.PERMISSIONS
        for verb in p.verbs
        if (namespaced is None or p.namespaced == namespaced)
        and (own_namespace is None or p.own_namespace == own_namespace)
    }


def literal_calls() -> set[Rule]:
    """Rules of the literal `self._call("verb", _, "Kind", ...)` and `self.get(_, "Kind", ...)` in kube.py,
    and of literal `client.<method>(_, "Kind", ...)` (CLIENT_VERBS, `delete_owned`) in the operator
    modules that call the client directly (deletions and agent reads are named at the call site)."""
    used = set()
    modules = (kube, reconcile, agent_world, reconcile_agent, leader, agent_auto)
    nodes = [(m, n) for m in modules for n in ast.walk(ast.parse(inspect.getsource(m)))]
    for module, node in nodes:
        if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
            continue
        args = [a.value if isinstance(a, ast.Constant) else None for a in node.args]
        receiver = node.func.value
        if module is not kube and not (isinstance(receiver, ast.Name) and receiver.id == "kube"):
            continue  # elsewhere only calls on the client (named `kube`) reach the API
        if node.func.attr == "_call" and isinstance(args[0], str) and isinstance(args[2], str):
            verb, kind, sub = args[0], args[2], _subresource(node)
        elif node.func.attr in CLIENT_VERBS and len(args) >= 2 and isinstance(args[1], str):
            verb, kind, sub = CLIENT_VERBS[node.func.attr], args[1], ""
        else:
            continue
        group, plural = next(v for (_, k), v in kube.KINDS.items() if k == kind)
        used.add((group, plural + sub, verb))
    return used


def _subresource(call: ast.Call) -> str:
    for keyword in call.keywords:
        if keyword.arg == "subresource" and isinstance(keyword.value, ast.Constant):
            return str(keyword.value.value)
    return ""


def applied_kinds() -> set[Rule]:
    """Reconcile gets, creates and patches every kind it renders; owner refs may block owner deletion."""
    used: set[Rule] = set()
    samples = sorted((ROOT / "tests" / "data" / "hybridinference" / "valid").glob("*.yaml"))
    for path in samples:
        body = yaml.safe_load(path.read_text())
        body["metadata"].update(namespace="ns", uid="u")
        for manifest in _children(parse(body)):
            group, plural = kube.KINDS[(manifest["apiVersion"], manifest["kind"])]
            used |= {(group, plural, verb) for verb in ("get", "create", "patch")}
            if any(ref.get("blockOwnerDeletion") for ref in manifest["metadata"]["ownerReferences"]):
                used.add(("hybridinference.dev", "hybridinferences/finalizers", "update"))
    return used


def _children(cr: Any) -> list[dict[str, Any]]:
    """Every child a pass may apply for `cr`, the agent's too (with an agent that is serving it)."""
    manifests = render_children(cr, NodePlacement(("n",), ("n",), "t"), OperatorConfig())
    if cr.spec.decode.agent is None:
        return manifests
    worker = WorkerReport(WorkerPhase.READY, port=8000)
    lease = AgentLease("mac", address="192.0.2.7", duration_s=10, workers={"ns/x": worker})
    reading = LeaseReading(lease, 0.0)
    data = assignment_data(cr, "192.0.2.1:30051")
    slice_manifest = endpoint_slice(cr, judge(reading, "ns/x", ""))
    assert slice_manifest is not None
    return [*adapt(manifests, cr, reading), assignment(cr, data), slice_manifest]


def kopf_needs() -> set[Rule]:
    """kopf lists and watches every handled resource, patches its own (annotations), posts events."""
    used = {("", "events", "create")}
    for handler in kopf.get_default_registry()._changing.get_all_handlers():
        used.add(
            (
                handler.selector.group or "",
                handler.selector.plural or handler.selector.any_name or "",
                "patch",
            )
        )
    registry = kopf.get_default_registry()
    registries = (registry._changing, registry._watching, registry._indexing)
    for registry in registries:
        for handler in registry.get_all_handlers():
            group, plural = (
                handler.selector.group or "",
                handler.selector.plural or handler.selector.any_name or "",
            )
            used |= {(group, plural, "list"), (group, plural, "watch")}
    return used


def test_everything_the_code_uses_is_declared_and_nothing_else() -> None:
    used = literal_calls() | applied_kinds() | kopf_needs()
    everything = declared(own_namespace=None)
    assert used - everything == set(), "used but missing from kube.PERMISSIONS"
    assert everything - used == set(), "declared in kube.PERMISSIONS but never used"


def never_cluster_wide() -> set[Rule]:
    return {
        (p.group, p.resource, v)
        for p in kube.PERMISSIONS
        for v in p.verbs
        if not p.cluster_wide and not p.own_namespace
    }


NO_ELECTION = {"leaderElection": {"enabled": False}}


def test_cluster_wide_chart_grants_everything_but_secrets_in_a_cluster_role() -> None:
    roles = [o for o in chart_objects(render_chart(NO_ELECTION)) if o["kind"] in ("ClusterRole", "Role")]
    assert [r["kind"] for r in roles] == ["ClusterRole"]
    assert never_cluster_wide() == {("", "secrets", "get")}
    assert expand(roles[0]["rules"]) == declared() - never_cluster_wide()


@pytest.mark.parametrize("values", [{}, {"watchNamespace": "inference"}])
def test_leader_election_lease_is_granted_only_in_the_operators_namespace_by_name(
    values: dict[str, Any],
) -> None:
    objects = chart_objects(render_chart(values))
    role = next(
        o for o in objects if o["kind"] == "Role" and o["metadata"]["name"].endswith("-leader-election")
    )
    binding = next(
        o for o in objects if o["kind"] == "RoleBinding" and o["roleRef"]["name"] == role["metadata"]["name"]
    )
    assert role["metadata"]["namespace"] == binding["metadata"]["namespace"] == "hybrid-inference-system"
    assert expand(role["rules"]) == declared(own_namespace=True)
    deployment = next(o for o in objects if o["kind"] == "Deployment")
    args = deployment["spec"]["template"]["spec"]["containers"][0]["args"]
    lease_name = next(a.split("=", 1)[1] for a in args if a.startswith("--lease-name="))
    named = [r for r in role["rules"] if r.get("resourceNames")]
    assert {v for r in named for v in r["verbs"]} == {"get", "patch"}
    assert all(r["resourceNames"] == [lease_name] for r in named)
    # create cannot be limited by name (the object does not exist yet): it is the only unnamed verb.
    assert [r["verbs"] for r in role["rules"] if not r.get("resourceNames")] == [["create"]]
    assert "--leader-election-namespace=hybrid-inference-system" in args


def test_secret_access_is_a_role_in_each_listed_namespace() -> None:
    objects = chart_objects(render_chart({"secretNamespaces": ["team-a", "team-b"], **NO_ELECTION}))
    roles = {o["metadata"]["namespace"]: o for o in objects if o["kind"] == "Role"}
    bindings = {o["metadata"]["namespace"]: o for o in objects if o["kind"] == "RoleBinding"}
    assert sorted(roles) == sorted(bindings) == ["team-a", "team-b"]
    assert all(expand(role["rules"]) == never_cluster_wide() for role in roles.values())
    assert bindings["team-a"]["roleRef"]["name"] == roles["team-a"]["metadata"]["name"]


def test_namespaced_chart_grants_namespaced_rules_in_a_role_and_only_nodes_cluster_wide() -> None:
    by_kind = {
        o["kind"]: o for o in chart_objects(render_chart({"watchNamespace": "inference", **NO_ELECTION}))
    }
    assert by_kind["Role"]["metadata"]["namespace"] == "inference"
    assert expand(by_kind["Role"]["rules"]) == declared(namespaced=True)
    assert expand(by_kind["ClusterRole"]["rules"]) == declared(namespaced=False)
    assert by_kind["RoleBinding"]["roleRef"]["name"] == by_kind["Role"]["metadata"]["name"]


async def test_client_refuses_a_call_outside_the_table() -> None:
    client = kube.KubeClient(kopf.ConnectionInfo(server="http://127.0.0.1:9"), "test", relogin=lambda: None)  # type: ignore[arg-type,return-value]
    with pytest.raises(PermissionError, match="delete core/services"):
        await client._call("delete", "v1", "Service", "DELETE", "/api/v1/services/x")
    await client.close()
