"""RBAC of the native decode agent: what its code calls, AGENT_PERMISSIONS and the chart's agent Roles
are the same set; its Lease rule is limited to its own name; it can read no Secret.

"Used" is derived from the agent's code (AST): every call on its Kubernetes client (`kube`/`_kube`)
whose kind is a literal.
"""

from __future__ import annotations

import ast
import importlib
import inspect
import pkgutil
from typing import Any

import hybrid_workers.agent
import kopf
import pytest
from helm_render import chart_objects, render_chart
from hybrid_operator import kube
from hybrid_workers.agent.permissions import AGENT_PERMISSIONS

Rule = tuple[str, str, str]
CLIENT_VERBS = {"get": "get", "list_all": "list", "watch": "watch", "merge_patch": "patch", "apply": "patch"}
VALUES = {"agents": [{"name": "mac-studio", "namespaces": ["inference", "staging"]}]}


def agent_calls() -> set[Rule]:
    used = set()
    for info in pkgutil.iter_modules(hybrid_workers.agent.__path__):
        module = importlib.import_module(f"hybrid_workers.agent.{info.name}")
        for node in ast.walk(ast.parse(inspect.getsource(module))):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
                continue
            receiver = node.func.value
            name = receiver.attr if isinstance(receiver, ast.Attribute) else getattr(receiver, "id", "")
            if name not in ("kube", "_kube") or node.func.attr not in CLIENT_VERBS:
                continue
            kind = node.args[1].value if isinstance(node.args[1], ast.Constant) else None
            group, plural = next(v for (_, k), v in kube.KINDS.items() if k == kind)
            used.add((group, plural, CLIENT_VERBS[node.func.attr]))
    return used


def declared() -> set[Rule]:
    return {(p.group, p.resource, verb) for p in AGENT_PERMISSIONS for verb in p.verbs}


def agent_roles() -> list[dict[str, Any]]:
    return [
        o
        for o in chart_objects(render_chart(VALUES))
        if o["kind"] == "Role" and "-agent-" in o["metadata"]["name"]
    ]


def test_everything_the_agent_calls_is_declared_and_nothing_else() -> None:
    assert agent_calls() == declared()


def test_chart_grants_each_agent_exactly_its_permissions_in_each_namespace() -> None:
    roles = agent_roles()
    assert sorted(r["metadata"]["namespace"] for r in roles) == ["inference", "staging"]
    for role in roles:
        granted = {
            (g, r, v)
            for rule in role["rules"]
            for g in rule["apiGroups"]
            for r in rule["resources"]
            for v in rule["verbs"]
        }
        assert granted == declared()
        lease_rule = next(rule for rule in role["rules"] if rule["resources"] == ["leases"])
        assert lease_rule["resourceNames"] == ["mac-studio"]
        assert not any("secrets" in rule["resources"] for rule in role["rules"])


def test_chart_binds_the_agent_account_and_creates_its_lease_in_each_namespace() -> None:
    objects = chart_objects(render_chart(VALUES))
    account = next(o for o in objects if o["kind"] == "ServiceAccount" and "-agent-" in o["metadata"]["name"])
    bindings = [o for o in objects if o["kind"] == "RoleBinding" and "-agent-" in o["metadata"]["name"]]
    leases = [o for o in objects if o["kind"] == "Lease"]
    assert {b["metadata"]["namespace"] for b in bindings} == {"inference", "staging"}
    assert all(b["subjects"][0]["name"] == account["metadata"]["name"] for b in bindings)
    assert {(lease["metadata"]["namespace"], lease["metadata"]["name"]) for lease in leases} == {
        ("inference", "mac-studio"),
        ("staging", "mac-studio"),
    }


async def test_agent_client_refuses_a_secret_read() -> None:
    info = kopf.ConnectionInfo(server="http://127.0.0.1:9")
    client = kube.KubeClient(info, "agent", lambda: info, AGENT_PERMISSIONS)
    with pytest.raises(PermissionError, match="get core/secrets"):
        await client.get("v1", "Secret", "inference", "kv-tls")
    await client.close()
