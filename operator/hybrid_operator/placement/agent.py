"""A decode agent as the planner sees it, and placement when the spec names one (`decode.agent`).

The agent takes part as one more "node" whose only role is decode, profiled from its Lease by the
planner's node rules: the calibrated profile it announces, else its built-in device id, at the rates of
the engine it reports (`planner/engines.yaml`: torch on MPS streams about half of what MLX does), with
its memory capped by the free memory it announces (unless it already runs this resource's worker,
whose memory is in use).
Auto placement picks the prefill node that pairs best with it; manual placement keeps the selected
prefill nodes and predicts the pair.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence

from hybrid_operator.agent_contract import AgentLease
from hybrid_operator.models import HybridInference, PlacementMode, Toleration
from hybrid_operator.placement.auto import HOSTNAME_LABEL, plan_for_spec
from hybrid_operator.placement.nodes import AGENT_NODE_PREFIX, NodeFacts, NodePlacement, Prediction, fits
from hybrid_operator.planner import PlannerError
from hybrid_operator.planner.auto_placement import NoPlacementError
from hybrid_operator.planner.hardware import DeviceProfile
from hybrid_operator.planner.nodes import (
    DEVICE_LABEL,
    ENGINE_ANNOTATION,
    PROFILE_ANNOTATION,
    NodeInfo,
    ProfiledNode,
    profile_node,
)

GB = 1e9


def _announced(lease: AgentLease) -> tuple[DeviceProfile | None, str]:
    """The profile the Lease announces as its engine runs on it (the planner's own node rules: the
    calibrated profile, else the device id; the engine's rates), and the evidence or why there is none."""
    if not lease.profile and not lease.device_profile:
        return None, (
            "announces no device profile; start it with --profile FILE (from `hybrid-inference "
            "calibrate`) or --device-profile ID (e.g. m3-ultra)"
        )
    labels = {DEVICE_LABEL: lease.device_profile} if lease.device_profile else {}
    annotations = {PROFILE_ANNOTATION: json.dumps(lease.profile)} if lease.profile else {}
    if lease.engine and lease.device:  # the engine's rates (mlx/metal vs torch/mps)
        annotations[ENGINE_ANNOTATION] = f"{lease.engine}/{lease.device}"
    found = profile_node(NodeInfo(AGENT_NODE_PREFIX + lease.name, labels, annotations))
    evidence = found.reason.replace(f"label {DEVICE_LABEL}=", "device profile ").replace(
        f"annotation {PROFILE_ANNOTATION}", "its Lease"
    )
    return found.device, evidence


def agent_node(lease: AgentLease, owner: str = "") -> ProfiledNode:
    """The agent as a decode-only planner node named `agent:<name>`. `owner` ("<ns>/<name>"): the
    resource being placed; its own worker's memory on the agent is not counted as used."""
    device, evidence = _announced(lease)
    free = lease.free_memory_bytes
    if device is not None and free > 0 and owner not in lease.workers:
        capped = free / GB / (1 - device.memory_reserve)  # usable memory = what is free now
        if capped < device.memory_gb:
            device = dataclasses.replace(device, memory_gb=capped)
        evidence += f", {free / GB:.1f} GB free"
    return ProfiledNode(name=AGENT_NODE_PREFIX + lease.name, device=device, evidence=f"agent {evidence}")


def manual_for_checks(cr: HybridInference) -> HybridInference:
    """The resource as the node checks of its pods see it when decode is an agent: manual placement
    (the planner's part is ours), and decode pods that fit any node when no fallback ever runs them."""
    target = cr.spec.decode.agent
    if target is None:
        return cr
    spec = cr.spec
    if spec.placement.mode == PlacementMode.AUTO:
        placement = spec.placement.model_copy(update={"mode": PlacementMode.MANUAL})
        spec = spec.model_copy(update={"placement": placement})
    if target.fallback == "none":
        anywhere = {"node_selector": None, "tolerations": (Toleration(operator="Exists"),), "gpus": 0}
        spec = spec.model_copy(update={"decode": spec.decode.model_copy(update=anywhere)})
    return cr.model_copy(update={"spec": spec})


def plan_with_agent(cr: HybridInference, nodes: Sequence[NodeFacts], lease: AgentLease) -> NodePlacement:
    """Prefill on the node the planner pairs best with the agent; `problems` when it cannot plan."""
    spec, agent = cr.spec, agent_node(lease, f"{cr.namespace}/{cr.name}")
    if agent.device is None:
        problem = f"placement.mode auto: decode.agent {lease.name} {agent.evidence.removeprefix('agent ')}"
        return NodePlacement((), (), reason=problem, problems=(problem,))
    roles = {node.name: {"prefill"} if fits(spec.prefill, node) else set() for node in nodes}
    roles[agent.name] = {"decode"}
    try:
        plan = plan_for_spec(spec, [*nodes, agent], roles)
    except (NoPlacementError, PlannerError) as exc:
        problem = f"placement.mode auto with decode.agent {lease.name}: {exc}"
        return NodePlacement((), (), reason=problem, problems=(problem,))
    hostname = {n.name: n.labels.get(HOSTNAME_LABEL, n.name) for n in nodes}
    return NodePlacement(
        prefill_nodes=(plan.prefill_node,),
        decode_nodes=(agent.name,),
        reason="auto: " + plan.reason,
        prediction=Prediction.of(plan, agent.name),
        prefill_selector={HOSTNAME_LABEL: hostname[plan.prefill_node]},
    )


def predict_for_agent(
    cr: HybridInference, nodes: Sequence[NodeFacts], lease: AgentLease, placement: NodePlacement
) -> NodePlacement:
    """Manual placement with an agent: decode is the agent (not the fallback's candidate nodes), and the
    prediction is the planner's for the selected prefill nodes paired with the agent's profile."""
    base = dataclasses.replace(
        placement, decode_nodes=(AGENT_NODE_PREFIX + lease.name,), prediction=None, no_prediction=""
    )
    planned = plan_with_agent(cr, [n for n in nodes if n.name in placement.prefill_nodes], lease)
    if planned.problems:
        return dataclasses.replace(base, no_prediction=planned.problems[0])
    return dataclasses.replace(base, prediction=planned.prediction)
