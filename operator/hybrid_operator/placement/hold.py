"""Keep the last good placement when its nodes become unavailable (NotReady, cordoned, drained away).

A decode node that goes NotReady for a reboot, or is cordoned for maintenance, is a degraded system,
not an invalid spec: the children stay as they are (Deployments keep their pods or wait for the node),
drift repair and spec changes keep working, and the status says Degraded with the reason. Only a spec
that never had a node, i.e. a selector nothing in the cluster matches even ignoring readiness, is
Invalid (NoMatchingNode).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from typing import Any

from hybrid_operator.models import HybridInferenceSpec, PlacementMode
from hybrid_operator.placement.auto import HOSTNAME_LABEL
from hybrid_operator.placement.nodes import AGENT_NODE_PREFIX, NodeFacts, NodePlacement
from hybrid_operator.placement.resolve import resolve_placement


@dataclasses.dataclass(frozen=True)
class HeldPlacement:
    """The placement to render, and why it is degraded (None: all nodes available)."""

    placement: NodePlacement
    degraded: str | None = None


def unavailable_nodes(nodes: Sequence[Mapping[str, Any]]) -> dict[str, str]:
    """Node name -> why pods cannot be scheduled there now ("NotReady", "cordoned")."""
    result = {}
    for node in nodes:
        ready = any(
            c.get("type") == "Ready" and c.get("status") == "True"
            for c in node.get("status", {}).get("conditions", [])
        )
        why = [] if ready else ["NotReady"]
        if node.get("spec", {}).get("unschedulable"):
            why.append("cordoned")
        if why:
            result[node["metadata"]["name"]] = " and ".join(why)
    return result


def _previous_nodes(previous: Mapping[str, Any], generation: int | None) -> tuple[str, str] | None:
    """(prefill node, decode node) of the last good placement of this same spec generation, if the
    status named one node each. After a spec change the old placement proves nothing about the new
    selectors, so a typo that matches no node is still reported as NoMatchingNode."""
    if previous.get("phase") in (None, "Invalid") or previous.get("observedGeneration") != generation:
        return None
    where = previous.get("placement") or {}
    prefill, decode = where.get("prefillNode") or "", where.get("decodeNode") or ""
    if not prefill or not decode or "(+" in prefill + decode or "?" in (prefill, decode):
        return None
    if decode.startswith(AGENT_NODE_PREFIX):
        return None  # an agent is no node to keep pods on (a lost one is re-placed: candidates.py)
    return prefill, decode


def _pinned(names: tuple[str, str], nodes: Sequence[NodeFacts], reason: str) -> NodePlacement:
    hostname = {n.name: n.labels.get(HOSTNAME_LABEL, n.name) for n in nodes}
    prefill, decode = names
    return NodePlacement(
        prefill_nodes=(prefill,),
        decode_nodes=(decode,),
        reason=reason,
        prefill_selector={HOSTNAME_LABEL: hostname.get(prefill, prefill)},
        decode_selector={HOSTNAME_LABEL: hostname.get(decode, decode)},
    )


def hold_placement(
    spec: HybridInferenceSpec,
    nodes: Sequence[Mapping[str, Any]],
    previous: Mapping[str, Any],
    generation: int | None = None,
) -> HeldPlacement:
    """The placement for these nodes; when it fails only because nodes are unavailable, or after a good
    placement existed, the last good one (auto) or the spec's selectors (manual), marked degraded."""
    facts = [NodeFacts.from_node(n) for n in nodes]
    down = unavailable_nodes(nodes)
    before = _previous_nodes(previous, generation)
    if spec.placement.mode == PlacementMode.AUTO and before is not None:
        # Auto placement does not move pods for a reboot or a drain: it keeps the planned pair.
        known = {n["metadata"]["name"] for n in nodes}
        away = {name: down.get(name, "deleted") for name in before if name in down or name not in known}
        if away:
            text = ", ".join(f"{name} is {why}" for name, why in sorted(away.items()))
            message = f"placement.mode auto: {text}; keeping the last placement {before[0]} + {before[1]}"
            return HeldPlacement(_pinned(before, facts, "auto (held): " + message), message)
    placement = resolve_placement(spec, facts)
    if not placement.problems:
        return HeldPlacement(placement)
    down_text = ", ".join(f"{name} is {why}" for name, why in sorted(down.items())) or "no node is down"
    problem = "; ".join(placement.problems)
    relaxed = resolve_placement(spec, [dataclasses.replace(f, schedulable=True) for f in facts])
    if not relaxed.problems or before is not None:
        message = f"{problem} ({down_text}); pods wait until a matching node is schedulable again"
        held = relaxed if not relaxed.problems else dataclasses.replace(placement, problems=())
        return HeldPlacement(
            dataclasses.replace(held, reason=held.reason + f" (degraded: {down_text})"), message
        )
    return HeldPlacement(placement)
