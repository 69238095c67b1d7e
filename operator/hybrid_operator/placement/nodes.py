"""What placement knows about nodes (facts, taints, fit) and what it decides (NodePlacement); pure."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from hybrid_operator.models import Toleration, WorkerPoolSpec
from hybrid_operator.planner.auto_placement import PlacementPlan

GPU_RESOURCE = "nvidia.com/gpu"
AGENT_NODE_PREFIX = "agent:"  # how a decode agent appears among nodes (status.placement.decodeNode)


@dataclass(frozen=True)
class Taint:
    """A node taint (key, value, effect)."""

    key: str
    value: str = ""
    effect: str = "NoSchedule"


@dataclass(frozen=True)
class NodeFacts:
    """What placement needs to know about one node."""

    name: str
    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)
    gpus: int = 0  # allocatable nvidia.com/gpu
    taints: tuple[Taint, ...] = ()
    schedulable: bool = True  # false when cordoned or not Ready

    @classmethod
    def from_node(cls, node: Mapping[str, Any]) -> NodeFacts:
        """Facts from a v1 Node object as the API returns it."""
        meta, spec, status = node.get("metadata", {}), node.get("spec", {}), node.get("status", {})
        ready = any(
            c.get("type") == "Ready" and c.get("status") == "True" for c in status.get("conditions", [])
        )
        taints = tuple(
            Taint(t["key"], t.get("value", ""), t.get("effect", "NoSchedule")) for t in spec.get("taints", [])
        )
        return cls(
            name=meta["name"],
            labels=dict(meta.get("labels", {})),
            annotations=dict(meta.get("annotations", {})),
            gpus=int(status.get("allocatable", {}).get(GPU_RESOURCE, 0)),
            taints=taints,
            schedulable=ready and not spec.get("unschedulable", False),
        )


@dataclass(frozen=True)
class Prediction:
    """The planner's prediction for one prefill/decode pair (status.prediction, the decode flags)."""

    prefill_node: str  # the pair it is for (an agent reads `agent:<name>`)
    decode_node: str
    ttft_seconds: float
    decode_tokens_per_second: float
    speedup_vs_best_single_node: float
    remote_prefill_min_tokens: int | None = None  # the planner's threshold (None: keep the spec's)

    @classmethod
    def of(cls, plan: PlacementPlan, decode_node: str | None = None) -> Prediction:
        """The prediction of `plan` (`decode_node`: the name to show for its decode node)."""
        return cls(
            prefill_node=plan.prefill_node,
            decode_node=decode_node or plan.decode_node,
            ttft_seconds=plan.ttft_seconds,
            decode_tokens_per_second=plan.decode_tokens_per_second,
            speedup_vs_best_single_node=plan.speedup_vs_best_single_node,
            remote_prefill_min_tokens=plan.remote_prefill_min_tokens,
        )


@dataclass(frozen=True)
class NodePlacement:
    """The nodes each role may run on; `problems` non-empty means the spec cannot work on these nodes."""

    prefill_nodes: tuple[str, ...]
    decode_nodes: tuple[str, ...]
    reason: str  # why these nodes (the choice only; `summary` adds the prediction's part)
    problems: tuple[str, ...] = ()
    prediction: Prediction | None = None  # auto mode, or manual with profiled nodes
    no_prediction: str = ""  # why `prediction` is None where one was attempted
    # Node selectors the renderer uses; auto mode pins the chosen node by hostname.
    prefill_selector: Mapping[str, str] | None = None
    decode_selector: Mapping[str, str] | None = None

    @property
    def summary(self) -> str:
        """status.placement.reason: the choice, then which pair the prediction is for (when the
        placement allows more than that pair) or why there is none."""
        if self.no_prediction:
            return f"{self.reason}; no prediction: {self.no_prediction}"
        p = self.prediction
        if p is None or (self.prefill_nodes, self.decode_nodes) == ((p.prefill_node,), (p.decode_node,)):
            return self.reason
        return f"{self.reason}; predicted for {p.prefill_node} + {p.decode_node}"


def tolerates(tolerations: Sequence[Toleration], taint: Taint) -> bool:
    """Kubernetes' toleration matching for one taint."""
    for tol in tolerations:
        if tol.effect is not None and tol.effect != taint.effect:
            continue
        if tol.operator == "Exists" and (tol.key is None or tol.key == taint.key):
            return True
        if tol.operator == "Equal" and tol.key == taint.key and (tol.value or "") == taint.value:
            return True
    return False


def fits(pool: WorkerPoolSpec, node: NodeFacts) -> bool:
    """Whether a pod of `pool` could be scheduled on `node` (selector, taints, GPUs, readiness)."""
    selector = pool.node_selector or {}
    if not node.schedulable or any(node.labels.get(k) != v for k, v in selector.items()):
        return False
    blocking = [t for t in node.taints if t.effect in ("NoSchedule", "NoExecute")]
    if not all(tolerates(pool.tolerations, t) for t in blocking):
        return False
    return pool.gpus <= node.gpus


def node_label(names: Sequence[str]) -> str:
    """Short text for a printer column: one node's name, or the first and how many more."""
    if not names:
        return ""
    return names[0] if len(names) == 1 else f"{names[0]} (+{len(names) - 1} more)"
