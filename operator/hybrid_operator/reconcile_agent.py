"""The decode-agent part of one reconcile pass: assignment, EndpointSlice, and removal of stale children.

Runs after the pod-path children were applied (the prefill Service's NodePort is known by then).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

from hybrid_operator.agent_contract import assignment_digest
from hybrid_operator.agent_world import (
    AgentProblem,
    AgentState,
    AgentView,
    LeaseReading,
    data_node_port,
    judge,
    prefill_address,
    prefill_service_of,
)
from hybrid_operator.apply import apply_all
from hybrid_operator.kube import ApplyResult, KubeClient
from hybrid_operator.models import AgentFallback, HybridInference, PlacementMode
from hybrid_operator.placement import HeldPlacement, NodeFacts, NodePlacement
from hybrid_operator.placement.agent import plan_with_agent, predict_for_agent
from hybrid_operator.placement.candidates import AutoChoice
from hybrid_operator.render_agent import AGENT_SUFFIX, assignment, assignment_data, endpoint_slice
from hybrid_operator.render_common import DECODE, child_name
from hybrid_operator.render_network import API_SUFFIX


@dataclasses.dataclass(frozen=True)
class AgentOutcome:
    """What the agent part applied, the agent's view, and the prefill address it was given."""

    results: tuple[ApplyResult, ...] = ()
    view: AgentView | None = None
    prefill: str | None = None


async def apply_agent(
    kube: KubeClient,
    cr: HybridInference,
    reading: LeaseReading | None,
    placement: NodePlacement,
    applied: Sequence[ApplyResult],
    previous: Mapping[str, Any],
) -> AgentOutcome:
    """Write the assignment and the EndpointSlice; without decode.agent, remove what an agent left."""
    target = cr.spec.decode.agent
    if target is None or reading is None:
        if previous.get("agent"):
            await _delete_agent_children(kube, cr)
        return AgentOutcome()
    nodes: list[dict[str, Any]] = []
    if not target.prefill_address:
        nodes = await kube.list_nodes() or []
    service = prefill_service_of(cr, [r.obj for r in applied])
    prefill = prefill_address(cr, placement, nodes, service)
    manifests = []
    digest = ""
    if prefill is not None:
        data = assignment_data(cr, prefill, placement, data_node_port(cr, service))
        digest = assignment_digest(data)
        manifests.append(assignment(cr, data))
    view = judge(reading, f"{cr.namespace}/{cr.name}", digest)
    if prefill is None and view.state != AgentState.LOST:
        message = "waiting for the API server to allocate the prefill NodePort"
        view = AgentView(view.lease, AgentState.STARTING, "WaitingForNodePort", message, view.report)
    slice_manifest = endpoint_slice(cr, view)
    if slice_manifest is not None:
        manifests.append(slice_manifest)
    results = await apply_all(kube, manifests)
    if target.fallback == AgentFallback.NONE and cr.metadata.uid:
        # A decode Deployment left from before the agent took the role (no fallback wanted) goes.
        decode = child_name(cr, DECODE)
        await kube.delete_owned("apps/v1", "Deployment", cr.namespace, decode, cr.metadata.uid)
    return AgentOutcome(tuple(results), view, prefill)


async def _delete_agent_children(kube: KubeClient, cr: HybridInference) -> None:
    uid = cr.metadata.uid or ""
    await kube.delete_owned("v1", "ConfigMap", cr.namespace, child_name(cr, AGENT_SUFFIX), uid)
    slice_name = child_name(cr, f"{API_SUFFIX}-{AGENT_SUFFIX}")
    await kube.delete_owned("discovery.k8s.io/v1", "EndpointSlice", cr.namespace, slice_name, uid)


async def agent_placement(
    kube: KubeClient,
    cr: HybridInference,
    reading: LeaseReading,
    held: HeldPlacement,
    choice: AutoChoice | None = None,
) -> HeldPlacement:
    """NodePlacement with an agent: chosen by auto placement among Nodes and agents, `choice` has it;
    auto with decode.agent, the planner picks the prefill node for the agent's profile; manual, the
    selected prefill nodes are kept and the prediction pairs them with the agent."""
    if choice is not None and choice.placement is not None:
        return dataclasses.replace(held, placement=choice.placement)
    nodes = await kube.list_nodes()
    if nodes is None:
        return held  # nodes not readable: keep the unchecked placement
    facts = [NodeFacts.from_node(n) for n in nodes]
    if cr.spec.placement.mode == PlacementMode.MANUAL:
        return dataclasses.replace(
            held, placement=predict_for_agent(cr, facts, reading.lease, held.placement)
        )
    placement = plan_with_agent(cr, facts, reading.lease)
    if placement.problems:
        raise AgentProblem("NoMatchingNode", "; ".join(placement.problems))
    return dataclasses.replace(held, placement=placement)
