"""Predictions for manual placement: the planner run on the nodes the selectors allow.

Auto placement gets its TTFT/TPS prediction from the plan that chose the nodes. Manual placement used
to get none, leaving the TTFT and TPS printer columns empty; the same planner, restricted to the nodes
each role's selector matches, predicts the best pair among them. Nodes the planner cannot profile, or
a model it does not know, simply leave the prediction empty (the reason says why).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

from hybrid_operator.models import HybridInferenceSpec, PlacementMode
from hybrid_operator.placement.auto import DEFAULT_LINK, DEFAULT_SHAPE, planner_request
from hybrid_operator.placement.nodes import NodeFacts, NodePlacement, Prediction
from hybrid_operator.planner import PlannerError, link_profile, model_shape
from hybrid_operator.planner.auto_placement import NoPlacementError, plan_placement


def with_prediction(
    spec: HybridInferenceSpec, nodes: Sequence[NodeFacts], placement: NodePlacement
) -> NodePlacement:
    """`placement` with the planner's prediction filled in (manual placement with nodes for both roles)."""
    if spec.placement.mode != PlacementMode.MANUAL or placement.problems or placement.prediction is not None:
        return placement
    roles = {
        node.name: {
            role
            for role, names in (("prefill", placement.prefill_nodes), ("decode", placement.decode_nodes))
            if node.name in names
        }
        for node in nodes
    }
    try:
        shape = model_shape(spec.model.source or DEFAULT_SHAPE)
        link = link_profile(spec.placement.link or DEFAULT_LINK)
        request = planner_request(spec, shape.max_context)
        plan = plan_placement(nodes, shape, request, link, spec.kv_transfer.mode.value, roles=roles)
    except (NoPlacementError, PlannerError) as exc:
        return dataclasses.replace(placement, no_prediction=str(exc))
    return dataclasses.replace(placement, prediction=Prediction.of(plan), no_prediction="")
