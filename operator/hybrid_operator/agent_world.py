"""What the operator knows about a decode agent: its Lease read and judged, and the prefill address.

A Lease counts as lost when its renewTime has not changed for its duration *by the operator's own
clock* (as Kubernetes leader election does): the agent's machine may keep another time, so its
renewTime is never compared with ours.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from hybrid_operator.agent_contract import AgentLease, WorkerPhase, WorkerReport
from hybrid_operator.kube import KubeClient
from hybrid_operator.models import HybridInference
from hybrid_operator.placement import NodePlacement
from hybrid_operator.render_common import KV_DATA_PORT, PREFILL, PREFILL_PORT, child_name


class AgentState(StrEnum):
    """The agent's state as status.agent.state and the Agent printer column show it."""

    READY = "Ready"  # the worker for this resource answers /ready with the current assignment
    STARTING = "Starting"  # assigned, worker starting, restarting or on an older assignment
    LOST = "Lost"  # the Lease stopped being renewed (or the agent shut down)
    REFUSED = "Refused"  # the agent will not run this assignment; `reason` says why


class AgentProblem(Exception):
    """The named agent cannot be used at all (no Lease); `reason` becomes the InvalidSpec reason."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class AgentView:
    """One agent as seen for one HybridInference in one pass."""

    lease: AgentLease
    state: AgentState
    reason: str
    message: str
    report: WorkerReport | None

    @property
    def serving(self) -> bool:
        """Lease alive and the worker ready (possibly still on the previous assignment)."""
        return self.state != AgentState.LOST and self.report is not None and self.report.phase == "ready"


class LeaseClock:
    """When each Lease's renewTime last changed, by this process's monotonic clock."""

    def __init__(self) -> None:
        self._seen: dict[tuple[str, str], tuple[str, float, bool]] = {}

    def renewing(self, namespace: str, name: str) -> bool:
        """Whether this process has seen that Lease's renewTime change (a renewal, not just a value)."""
        return self._seen.get((namespace, name), ("", 0.0, False))[2]

    def silent_for(self, namespace: str, name: str, renew_time: str) -> float:
        """Seconds since `renew_time` was first seen (0 on first sight: a restarted operator waits)."""
        now = time.monotonic()
        key = (namespace, name)
        last = self._seen.get(key)
        if last is None or last[0] != renew_time:
            self._seen[key] = (renew_time, now, last is not None)
            return 0.0
        return now - last[1]


CLOCK = LeaseClock()


@dataclass(frozen=True)
class LeaseReading:
    """An agent's Lease as read in one pass, with how long its renewTime has not changed."""

    lease: AgentLease
    silent_s: float


def judge(reading: LeaseReading, owner: str, digest: str) -> AgentView:
    """The agent's state for `owner` ("<ns>/<name>") whose current assignment has `digest`."""
    lease, silent_s = reading.lease, reading.silent_s
    report = lease.workers.get(owner)
    if lease.state == "stopped":
        return AgentView(lease, AgentState.LOST, "AgentStopped", f"agent {lease.name} shut down", report)
    if silent_s > max(lease.duration_s, 1) or lease.renewed is None:
        message = f"agent {lease.name}: Lease not renewed for {silent_s:.0f} s (lease {lease.duration_s} s)"
        return AgentView(lease, AgentState.LOST, "AgentLost", message, report)
    if report is None:
        return AgentView(lease, AgentState.STARTING, "Assigned", f"waiting for agent {lease.name}", None)
    if report.phase == WorkerPhase.REFUSED and report.config == digest:
        return AgentView(lease, AgentState.REFUSED, report.reason or "Refused", report.message, report)
    if report.phase == WorkerPhase.READY and report.config == digest:
        message = f"worker ready on {lease.address}:{report.port}"
        return AgentView(lease, AgentState.READY, "WorkerReady", message, report)
    reason = "Updating" if report.config != digest else report.reason or "WorkerStarting"
    message = report.message or f"agent {lease.name}: worker {report.phase.value}"
    return AgentView(lease, AgentState.STARTING, reason, message, report)


async def read_lease(kube: KubeClient, cr: HybridInference) -> LeaseReading | None:
    """The decode agent's Lease (None when decode.agent is unset); AgentProblem when it has none."""
    target = cr.spec.decode.agent
    if target is None:
        return None
    body = await kube.get("coordination.k8s.io/v1", "Lease", cr.namespace, target.name)
    if body is None:
        raise AgentProblem(
            "UnknownAgent",
            f"decode.agent.name {target.name!r}: no Lease of that name in namespace {cr.namespace} "
            "(is the agent installed and bound to this namespace? see docs/nodes.md)",
        )
    renew = str(body.get("spec", {}).get("renewTime") or "")
    return LeaseReading(AgentLease.from_object(body), CLOCK.silent_for(cr.namespace, target.name, renew))


def prefill_address(
    cr: HybridInference,
    placement: NodePlacement,
    nodes: Sequence[Mapping[str, Any]],
    service: Mapping[str, Any],
) -> str | None:
    """HOST:PORT the agent dials: decode.agent.prefillAddress, else a prefill node's IP and the NodePort."""
    target = cr.spec.decode.agent
    if target is not None and target.prefill_address:
        return target.prefill_address
    ports = service.get("spec", {}).get("ports", [])
    node_port = next((p.get("nodePort") for p in ports if p.get("port") == PREFILL_PORT), None)
    if not node_port:
        return None  # the API server allocates it when the Service becomes a NodePort
    preferred = [n for n in nodes if n.get("metadata", {}).get("name") in placement.prefill_nodes]
    for node in [*preferred, *nodes]:
        for address in node.get("status", {}).get("addresses", []):
            if address.get("type") == "InternalIP":
                return f"{address['address']}:{node_port}"
    return None


def data_node_port(cr: HybridInference, service: Mapping[str, Any]) -> int | None:
    """The NodePort of the prefill Service's KV data port, when the agent reaches prefill through the
    NodePorts (None with decode.agent.prefillAddress, or before the API server allocated it)."""
    target = cr.spec.decode.agent
    if target is None or target.prefill_address:
        return None
    ports = service.get("spec", {}).get("ports", [])
    found = next((p.get("nodePort") for p in ports if p.get("port") == KV_DATA_PORT), None)
    return int(found) if found else None


def prefill_service_of(cr: HybridInference, applied: Sequence[Mapping[str, Any]]) -> Mapping[str, Any]:
    """The applied `<name>-prefill` Service among the objects one pass applied."""
    name = child_name(cr, PREFILL)
    return next(
        (o for o in applied if o.get("kind") == "Service" and o.get("metadata", {}).get("name") == name), {}
    )
