"""Placement: which nodes run each role (pure; only kube.py talks to the Kubernetes API).

- nodes.py   node facts (labels, taints, GPUs, readiness), whether a pool fits a node, NodePlacement
- manual.py  `placement.mode: manual`: each role's nodeSelector, tolerations and GPU count
- auto.py    `placement.mode: auto`: the planner (`planner/auto_placement.py`) chooses, pinned by hostname

The planner itself (`hybrid_operator.planner`) only predicts; it knows nothing of CRs or Nodes' YAML.
"""

from __future__ import annotations

from collections.abc import Sequence

from hybrid_operator.models import HybridInferenceSpec, PlacementMode
from hybrid_operator.placement.auto import decode_prediction_flags, resolve_auto
from hybrid_operator.placement.manual import resolve_manual
from hybrid_operator.placement.nodes import GPU_RESOURCE, NodeFacts, NodePlacement, Taint, node_label

__all__ = [
    "GPU_RESOURCE",
    "NodeFacts",
    "NodePlacement",
    "Taint",
    "decode_prediction_flags",
    "node_label",
    "resolve_placement",
]


def resolve_placement(spec: HybridInferenceSpec, nodes: Sequence[NodeFacts]) -> NodePlacement:
    """Decide where each role may run. Manual: each role's selector; auto: the planner chooses."""
    if spec.placement.mode == PlacementMode.AUTO:
        return resolve_auto(spec, nodes)
    return resolve_manual(spec, nodes)
