"""What placement knows about nodes (facts, taints, fit) and what it decides (NodePlacement); pure."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from hybrid_operator.models import Toleration, WorkerPoolSpec

GPU_RESOURCE = "nvidia.com/gpu"


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
class NodePlacement:
    """The nodes each role may run on; `problems` non-empty means the spec cannot work on these nodes."""

    prefill_nodes: tuple[str, ...]
    decode_nodes: tuple[str, ...]
    reason: str
    problems: tuple[str, ...] = ()
    ttft_seconds: float | None = None  # predictions: filled by the planner (auto mode)
    decode_tokens_per_second: float | None = None
    speedup_vs_best_single_node: float | None = None
    # Node selectors the renderer uses; auto mode pins the chosen node by hostname.
    prefill_selector: Mapping[str, str] | None = None
    decode_selector: Mapping[str, str] | None = None
    remote_prefill_min_tokens: int | None = None  # auto mode: the planner's threshold (None: keep spec's)


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
