"""Automatic placement: profile the cluster's nodes, plan every placement, pick nodes for both roles."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from hybrid_operator.planner.errors import PlannerError
from hybrid_operator.planner.hardware import DeviceProfile
from hybrid_operator.planner.links import LinkProfile
from hybrid_operator.planner.model_shape import ModelShape
from hybrid_operator.planner.nodes import NodeLike, NodeProfile, profile_node
from hybrid_operator.planner.plan import Plan, make_plan
from hybrid_operator.planner.roofline import Request


class NoPlacementError(PlannerError):
    """No node has a usable profile (or the model fits none); `excluded` maps node -> reason."""

    def __init__(self, message: str, excluded: dict[str, str]) -> None:
        super().__init__(message)
        self.excluded = excluded


@dataclass(frozen=True)
class PlacementPlan:
    """The chosen nodes, the prediction behind the choice, and what was left out and why."""

    prefill_node: str  # node that prefills (== decode_node for a single-node placement)
    decode_node: str  # node that decodes and serves the API
    mode: str  # single | bulk | layerwise
    reason: str  # one sentence for status.placement.reason
    ttft_seconds: float
    decode_tokens_per_second: float
    total_seconds: float
    speedup_vs_best_single_node: float
    remote_prefill_min_tokens: int | None  # None: never prefill remotely (single node, or never pays)
    excluded: dict[str, str]  # node -> why it was not considered
    plan: Plan  # the full plan, placements by profile label

    def prediction(self) -> dict[str, Any]:
        """status.prediction (CRD field names)."""
        return {
            "ttftSeconds": round(self.ttft_seconds, 4),
            "decodeTokensPerSecond": round(self.decode_tokens_per_second, 2),
            "speedupVsBestSingleNode": round(self.speedup_vs_best_single_node, 3),
        }


def _groups(profiles: Sequence[NodeProfile]) -> dict[str, tuple[DeviceProfile, list[str]]]:
    """Nodes with equal profiles grouped under one label (the profile id, made unique if needed)."""
    groups: dict[str, tuple[DeviceProfile, list[str]]] = {}
    for entry in sorted(profiles, key=lambda p: p.node):
        assert entry.device is not None
        same = next((label for label, (d, _) in groups.items() if d == entry.device), None)
        if same is None:
            same = entry.device.id if entry.device.id not in groups else f"{entry.device.id}@{entry.node}"
            groups[same] = (replace(entry.device, id=same), [])
        groups[same][1].append(entry.node)
    return groups


def _reason(plan: Plan, nodes: dict[str, str], evidence: dict[str, str]) -> str:
    best, single = plan.best, plan.best_single
    p, d = nodes[best.prefill], nodes[best.decode]
    request = plan.request
    shape = f"{request.prompt_tokens}-token prompts, {request.output_tokens} output tokens"
    if best.mode == "single":
        return (
            f"{p} ({best.prefill}, from {evidence[p]}) alone is fastest for {shape}: predicted "
            f"{best.total_seconds:.2f} s per request; no split between known nodes beats it"
        )
    alone = f" vs {single.total_seconds:.2f} s on {nodes[single.prefill]} alone" if single else ""
    return (
        f"prefill on {p} ({best.prefill}, from {evidence[p]}), "
        f"decode on {d} ({best.decode}, from {evidence[d]}) "
        f"with {best.mode} KV over {plan.link.id}: predicted {best.total_seconds:.2f} s per request for "
        f"{shape}{alone}"
    )


def plan_placement(
    nodes: Sequence[NodeLike],
    model: ModelShape,
    request: Request,
    link: LinkProfile,
    transfer_mode: str = "layerwise",
) -> PlacementPlan:
    """Choose prefill and decode nodes for `model` serving `request`-shaped traffic over `link`,
    splits sending the KV cache in `transfer_mode` (the spec's kvTransfer.mode).

    Nodes without a known profile are excluded (with their reasons); NoPlacementError when none is left
    or the model fits on none of them.
    """
    profiles = [profile_node(node) for node in nodes]
    excluded = {p.node: p.reason for p in profiles if p.device is None}
    known = [p for p in profiles if p.device is not None]
    if not known:
        details = (
            "; ".join(f"{name}: {why}" for name, why in sorted(excluded.items()))
            or "the cluster has no nodes"
        )
        raise NoPlacementError(f"no node with a known device profile ({details})", excluded)
    groups = _groups(known)
    try:
        plan = make_plan(model, [device for device, _ in groups.values()], link, request, (transfer_mode,))
    except PlannerError as exc:
        raise NoPlacementError(str(exc), excluded) from None
    first_node = {label: names[0] for label, (_, names) in groups.items()}
    evidence = {p.node: p.reason for p in known}
    best = plan.best
    return PlacementPlan(
        prefill_node=first_node[best.prefill],
        decode_node=first_node[best.decode],
        mode=best.mode,
        reason=_reason(plan, first_node, evidence),
        ttft_seconds=best.ttft_seconds,
        decode_tokens_per_second=best.decode_tokens_per_second,
        total_seconds=best.total_seconds,
        speedup_vs_best_single_node=plan.speedup_vs_best_single_node,
        remote_prefill_min_tokens=plan.remote_prefill_min_tokens,
        excluded=excluded,
        plan=plan,
    )
