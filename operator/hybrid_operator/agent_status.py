"""Status of a HybridInference whose decode role runs on an agent: DecodeReady, Degraded, status.agent.

Pure: the agent's view (agent_world.py) goes in, the status dict of status.py comes out amended.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from hybrid_operator.agent_world import AgentState, AgentView
from hybrid_operator.models import AgentFallback, HybridInference
from hybrid_operator.render_common import DECODE
from hybrid_operator.status import RoleState


def decode_role(cr: HybridInference, view: AgentView, fallback: RoleState) -> RoleState:
    """The decode role as the agent serves it; while the agent is lost, the fallback Deployment's."""
    target = cr.spec.decode.agent
    if view.state == AgentState.LOST and target is not None and target.fallback == AgentFallback.DEPLOYMENT:
        return fallback
    failed = view.state in (AgentState.LOST, AgentState.REFUSED)
    failure = f"{view.reason}: {view.message}" if failed else None
    return RoleState(DECODE, 1, 1 if view.state == AgentState.READY else 0, failure)


def agent_block(view: AgentView, prefill: str | None) -> dict[str, Any]:
    """status.agent: what the agent's Lease says, and why it is not Ready."""
    lease, report = view.lease, view.report
    block: dict[str, Any] = {
        "name": lease.name,
        "state": view.state.value,
        "address": lease.address,
        "engine": lease.engine,
        "device": lease.device,
        "version": lease.version,
        "prefill": prefill or "",
        "restarts": report.restarts if report else 0,
        "reason": "" if view.state == AgentState.READY else f"{view.reason}: {view.message}",
    }
    return {key: value for key, value in block.items() if value not in ("", None)}


def with_agent(
    status: dict[str, Any], view: AgentView, prefill: str | None, previous: Mapping[str, Any], now: str
) -> dict[str, Any]:
    """`status` plus status.agent; a lost or refusing agent makes the resource Degraded with its reason
    (even when the fallback Deployment serves: the agent is what the spec asked for)."""
    result = {**status, "agent": agent_block(view, prefill)}
    if view.state not in (AgentState.LOST, AgentState.REFUSED):
        return result
    message = f"{view.reason}: {view.message}"
    result["phase"] = "Degraded"
    before = {c.get("type"): c for c in previous.get("conditions", [])}
    conditions = []
    for cond in status["conditions"]:
        if cond["type"] == "Degraded":
            old = before.get("Degraded", {})
            since = old.get("lastTransitionTime") if old.get("status") == "True" else now
            cond = {**cond, "status": "True", "reason": view.reason, "message": message}
            cond["lastTransitionTime"] = since or now
        conditions.append(cond)
    result["conditions"] = conditions
    return result
