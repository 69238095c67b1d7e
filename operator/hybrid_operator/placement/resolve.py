"""The one entry point: the placement mode of the spec picks manual or auto."""

from __future__ import annotations

from collections.abc import Sequence

from hybrid_operator.models import HybridInferenceSpec, PlacementMode
from hybrid_operator.placement.auto import resolve_auto
from hybrid_operator.placement.manual import resolve_manual
from hybrid_operator.placement.nodes import NodeFacts, NodePlacement


def resolve_placement(spec: HybridInferenceSpec, nodes: Sequence[NodeFacts]) -> NodePlacement:
    """Decide where each role may run. Manual: each role's selector; auto: the planner chooses."""
    if spec.placement.mode == PlacementMode.AUTO:
        return resolve_auto(spec, nodes)
    return resolve_manual(spec, nodes)
