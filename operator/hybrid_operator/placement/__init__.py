"""Placement: which nodes run each role (pure; only kube.py talks to the Kubernetes API).

- nodes.py    node facts (labels, taints, GPUs, readiness), whether a pool fits a node, NodePlacement
- manual.py   `placement.mode: manual`: each role's nodeSelector, tolerations and GPU count
- auto.py     `placement.mode: auto`: the planner (`planner/auto_placement.py`) chooses, pinned by hostname
- resolve.py  `resolve_placement`: the spec's mode picks manual or auto
- hold.py     `hold_placement`: keeps the last good placement while its nodes are unavailable (Degraded)
- prediction.py  `with_prediction`: the planner's TTFT/TPS for a manual placement (the printer columns)
- agent.py    a decode agent as a planner node (its Lease's profile); placement when decode.agent is named
- candidates.py  auto placement without decode.agent: the best of the Nodes and the live agents

The planner itself (`hybrid_operator.planner`) only predicts; it knows nothing of CRs or Node objects.
"""

from hybrid_operator.placement.auto import decode_prediction_flags
from hybrid_operator.placement.hold import HeldPlacement, hold_placement, unavailable_nodes
from hybrid_operator.placement.nodes import (
    GPU_RESOURCE,
    NodeFacts,
    NodePlacement,
    Prediction,
    Taint,
    node_label,
)
from hybrid_operator.placement.prediction import with_prediction
from hybrid_operator.placement.resolve import resolve_placement

__all__ = [
    "GPU_RESOURCE",
    "HeldPlacement",
    "NodeFacts",
    "NodePlacement",
    "Prediction",
    "Taint",
    "decode_prediction_flags",
    "hold_placement",
    "node_label",
    "resolve_placement",
    "unavailable_nodes",
    "with_prediction",
]
