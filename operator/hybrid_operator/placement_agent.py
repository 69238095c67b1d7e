"""`placement.mode: auto` with `decode.agent`: the planner weighs the prefill nodes against the agent.

The agent takes part as one more "node" whose only role is decode, profiled from its Lease (the
calibrated profile it announces, or its built-in device id), so the planner picks the prefill node that
pairs best with it and predicts TTFT and tokens/s for that split. The planner is used as is.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence

from hybrid_operator.agent_contract import AgentLease
from hybrid_operator.models import HybridInference, PlacementMode
from hybrid_operator.placement import NodeFacts, NodePlacement
from hybrid_operator.placement.auto import (
    DEFAULT_LINK,
    DEFAULT_SHAPE,
    HOSTNAME_LABEL,
    planner_request,
)
from hybrid_operator.placement.nodes import fits
from hybrid_operator.planner import PlannerError, link_profile, model_shape
from hybrid_operator.planner.auto_placement import NoPlacementError, plan_placement
from hybrid_operator.planner.nodes import DEVICE_LABEL, ENGINE_ANNOTATION, PROFILE_ANNOTATION

AGENT_NODE_PREFIX = "agent:"  # how an agent appears among nodes (status.placement.decodeNode)


def agent_node(lease: AgentLease) -> NodeFacts:
    """The agent as the planner sees a node: its calibrated profile, else its built-in device id, as
    the engine it reports runs on it."""
    labels = {DEVICE_LABEL: lease.device_profile} if lease.device_profile else {}
    annotations = {PROFILE_ANNOTATION: json.dumps(lease.profile)} if lease.profile else {}
    if lease.engine and lease.device:  # the planner takes the engine's rates (mlx/metal vs torch/mps)
        annotations[ENGINE_ANNOTATION] = f"{lease.engine}/{lease.device}"
    return NodeFacts(name=AGENT_NODE_PREFIX + lease.name, labels=labels, annotations=annotations)


def manual_for_checks(cr: HybridInference) -> HybridInference:
    """The resource with manual placement, for the node checks of the fallback pods (auto is ours)."""
    if cr.spec.decode.agent is None or cr.spec.placement.mode != PlacementMode.AUTO:
        return cr
    placement = cr.spec.placement.model_copy(update={"mode": PlacementMode.MANUAL})
    return cr.model_copy(update={"spec": cr.spec.model_copy(update={"placement": placement})})


def plan_with_agent(cr: HybridInference, nodes: Sequence[NodeFacts], lease: AgentLease) -> NodePlacement:
    """Prefill on the node the planner pairs best with the agent; `problems` when it cannot plan."""
    spec, agent = cr.spec, agent_node(lease)
    if not lease.profile and not lease.device_profile:
        problem = (
            f"placement.mode auto: decode.agent {lease.name} announces no device profile; start it with "
            "--profile FILE (from `hybrid-inference calibrate`) or --device-profile ID (e.g. m3-ultra)"
        )
        return NodePlacement((), (), reason=problem, problems=(problem,))
    roles = {node.name: {"prefill"} if fits(spec.prefill, node) else set() for node in nodes}
    roles[agent.name] = {"decode"}
    try:
        shape = model_shape(spec.model.source or DEFAULT_SHAPE)
        plan = plan_placement(
            [*nodes, agent],
            shape,
            planner_request(spec, shape.max_context),
            link_profile(spec.placement.link or DEFAULT_LINK),
            spec.kv_transfer.mode.value,
            roles=roles,
        )
    except (NoPlacementError, PlannerError) as exc:
        problem = f"placement.mode auto with decode.agent {lease.name}: {exc}"
        return NodePlacement((), (), reason=problem, problems=(problem,))
    hostname = {n.name: n.labels.get(HOSTNAME_LABEL, n.name) for n in nodes}
    return NodePlacement(
        prefill_nodes=(plan.prefill_node,),
        decode_nodes=(agent.name,),
        reason="auto: " + plan.reason,
        ttft_seconds=plan.ttft_seconds,
        decode_tokens_per_second=plan.decode_tokens_per_second,
        speedup_vs_best_single_node=plan.speedup_vs_best_single_node,
        prefill_selector={HOSTNAME_LABEL: hostname[plan.prefill_node]},
        remote_prefill_min_tokens=plan.remote_prefill_min_tokens,
    )


def predict_for_agent(
    cr: HybridInference, nodes: Sequence[NodeFacts], lease: AgentLease, placement: NodePlacement
) -> NodePlacement:
    """Manual placement with an agent: decode is the agent (not the fallback's candidate nodes), and the
    prediction is the planner's for the selected prefill nodes paired with the agent's profile."""
    agent = AGENT_NODE_PREFIX + lease.name
    base = dataclasses.replace(
        placement,
        decode_nodes=(agent,),
        ttft_seconds=None,
        decode_tokens_per_second=None,
        speedup_vs_best_single_node=None,
        remote_prefill_min_tokens=None,
        reason=placement.reason.split("; predicted for ")[0].split("; no prediction: ")[0],
    )
    planned = plan_with_agent(cr, [n for n in nodes if n.name in placement.prefill_nodes], lease)
    if planned.problems:
        return dataclasses.replace(base, reason=f"{base.reason}; no prediction: {planned.problems[0]}")
    return dataclasses.replace(
        base,
        reason=f"{base.reason}; predicted for {planned.prefill_nodes[0]} + {agent}",
        ttft_seconds=planned.ttft_seconds,
        decode_tokens_per_second=planned.decode_tokens_per_second,
        speedup_vs_best_single_node=planned.speedup_vs_best_single_node,
        remote_prefill_min_tokens=planned.remote_prefill_min_tokens,
    )
