"""`placement.mode: manual`: each role runs where its nodeSelector, tolerations and GPU count allow."""

from __future__ import annotations

from collections.abc import Sequence

from hybrid_operator.models import HybridInferenceSpec, WorkerPoolSpec
from hybrid_operator.placement.nodes import NodeFacts, NodePlacement, fits


def describe(role: str, pool: WorkerPoolSpec, names: Sequence[str]) -> str:
    """`prefill.nodeSelector {gpu: 'true'} matches spark` style text for status and events."""
    selector = dict(pool.node_selector or {})
    what = f"{role}.nodeSelector {selector}" if selector else f"{role} (no nodeSelector)"
    gpus = f" with {pool.gpus} GPU(s)" if pool.gpus else ""
    if not names:
        return f"{what}{gpus} matches no schedulable node whose taints it tolerates"
    return f"{what}{gpus} matches {', '.join(names)}"


def resolve_manual(spec: HybridInferenceSpec, nodes: Sequence[NodeFacts]) -> NodePlacement:
    """Every schedulable node each role's pods fit on; a problem per role that fits none."""
    prefill = tuple(sorted(n.name for n in nodes if fits(spec.prefill, n)))
    decode = tuple(sorted(n.name for n in nodes if fits(spec.decode, n)))
    parts = [describe("prefill", spec.prefill, prefill), describe("decode", spec.decode, decode)]
    problems = tuple(text for text, names in zip(parts, (prefill, decode), strict=True) if not names)
    return NodePlacement(
        prefill_nodes=prefill,
        decode_nodes=decode,
        reason="manual: " + "; ".join(parts),
        problems=problems,
        prefill_selector=spec.prefill.node_selector,
        decode_selector=spec.decode.node_selector,
    )
