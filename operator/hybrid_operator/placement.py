"""Placement: which nodes can run each role, from node facts and the spec (pure; no Kubernetes calls).

`resolve_placement(spec, nodes)` is the seam: manual placement is decided here from each role's
nodeSelector, tolerations and GPU count; `placement.mode: auto` is handed to the planner through
`hybrid_operator.planner.resolve_auto(spec, nodes) -> Placement` (filling prefill/decode_selector with
the chosen nodes and the prediction fields), and reported as a spec problem until the planner has it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from hybrid_operator.models import HybridInferenceSpec, PlacementMode, Toleration, WorkerPoolSpec

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
class Placement:
    """Where each role may run; `problems` non-empty means the spec cannot work on these nodes."""

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

    @property
    def ok(self) -> bool:
        """True when both roles have at least one node."""
        return not self.problems


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


def describe(role: str, pool: WorkerPoolSpec, names: Sequence[str]) -> str:
    """`prefill.nodeSelector {gpu: 'true'} matches spark` style text for status and events."""
    selector = dict(pool.node_selector or {})
    what = f"{role}.nodeSelector {selector}" if selector else f"{role} (no nodeSelector)"
    gpus = f" with {pool.gpus} GPU(s)" if pool.gpus else ""
    if not names:
        return f"{what}{gpus} matches no schedulable node whose taints it tolerates"
    return f"{what}{gpus} matches {', '.join(names)}"


def _manual(spec: HybridInferenceSpec, nodes: Sequence[NodeFacts]) -> Placement:
    prefill = tuple(sorted(n.name for n in nodes if fits(spec.prefill, n)))
    decode = tuple(sorted(n.name for n in nodes if fits(spec.decode, n)))
    parts = [describe("prefill", spec.prefill, prefill), describe("decode", spec.decode, decode)]
    problems = tuple(text for text, names in zip(parts, (prefill, decode), strict=True) if not names)
    return Placement(
        prefill_nodes=prefill,
        decode_nodes=decode,
        reason="manual: " + "; ".join(parts),
        problems=problems,
        prefill_selector=spec.prefill.node_selector,
        decode_selector=spec.decode.node_selector,
    )


def _auto(spec: HybridInferenceSpec, nodes: Sequence[NodeFacts]) -> Placement:
    from hybrid_operator.placement_auto import resolve_auto  # imports this module: import here

    return resolve_auto(spec, nodes)


def resolve_placement(spec: HybridInferenceSpec, nodes: Sequence[NodeFacts]) -> Placement:
    """Decide where each role may run. Manual: each role's selector; auto: the planner chooses."""
    if spec.placement.mode == PlacementMode.AUTO:
        return _auto(spec, nodes)
    return _manual(spec, nodes)


def node_label(names: Sequence[str]) -> str:
    """Short text for a printer column: one node's name, or the first and how many more."""
    if not names:
        return ""
    return names[0] if len(names) == 1 else f"{names[0]} (+{len(names) - 1} more)"
