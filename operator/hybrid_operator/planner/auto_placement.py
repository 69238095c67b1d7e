"""Automatic placement: profile the cluster's nodes, plan every placement, pick nodes for both roles."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any

from hybrid_operator.planner.errors import PlannerError
from hybrid_operator.planner.hardware import DeviceProfile
from hybrid_operator.planner.links import LinkProfile
from hybrid_operator.planner.model_shape import ModelShape
from hybrid_operator.planner.nodes import NodeLike, NodeProfile, profile_node
from hybrid_operator.planner.placements import Placement
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


ROLES = frozenset({"prefill", "decode"})


def _groups(
    profiles: Sequence[NodeProfile], roles: Mapping[str, frozenset[str]]
) -> dict[str, tuple[DeviceProfile, frozenset[str], list[str]]]:
    """Nodes with equal profiles and roles grouped under one label (the profile id, made unique)."""
    groups: dict[str, tuple[DeviceProfile, frozenset[str], list[str]]] = {}
    for entry in sorted(profiles, key=lambda p: p.node):
        assert entry.device is not None
        key = (entry.device, roles[entry.node])
        same = next((label for label, (d, r, _) in groups.items() if (d, r) == key), None)
        if same is None:
            same = entry.device.id if entry.device.id not in groups else f"{entry.device.id}@{entry.node}"
            groups[same] = (replace(entry.device, id=same), roles[entry.node], [])
        groups[same][2].append(entry.node)
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


def _usable(
    nodes: Sequence[NodeLike], roles: Mapping[str, Collection[str]] | None
) -> tuple[list[NodeProfile], dict[str, str], dict[str, frozenset[str]]]:
    """Profiles of the nodes that have one and may run a role; the others with their reasons."""
    profiles = [profile_node(node) for node in nodes]
    excluded = {p.node: p.reason for p in profiles if p.device is None}
    allowed = {p.node: ROLES if roles is None else frozenset(roles.get(p.node, ())) & ROLES for p in profiles}
    for p in profiles:
        if p.device is not None and not allowed[p.node]:
            excluded[p.node] = "neither role's pods can run there (taints or GPU requests)"
    known = [p for p in profiles if p.device is not None and allowed[p.node]]
    return known, excluded, allowed


def plan_placement(
    nodes: Sequence[NodeLike],
    model: ModelShape,
    request: Request,
    link: LinkProfile,
    transfer_mode: str = "layerwise",
    roles: Mapping[str, Collection[str]] | None = None,
) -> PlacementPlan:
    """Choose prefill and decode nodes for `model` serving `request`-shaped traffic over `link`,
    splits sending the KV cache in `transfer_mode` (the spec's kvTransfer.mode).

    `roles` maps node name -> the roles ("prefill", "decode") whose pods may run there (None: any).
    Nodes without a known profile are excluded (with their reasons); NoPlacementError when none is left
    or the model fits on none of them.
    """
    known, excluded, allowed = _usable(nodes, roles)
    if not known:
        details = (
            "; ".join(f"{name}: {why}" for name, why in sorted(excluded.items()))
            or "the cluster has no nodes"
        )
        raise NoPlacementError(f"no node with a known device profile ({details})", excluded)
    for role in sorted(ROLES):
        if not any(role in allowed[p.node] for p in known):
            names = ", ".join(p.node for p in known)
            raise NoPlacementError(
                f"none of the known nodes ({names}) may run the {role} pods (taints or GPU requests)",
                excluded,
            )
    groups = _groups(known, allowed)
    group_roles = {label: group_role for label, (_, group_role, _) in groups.items()}

    def eligible(p: Placement) -> bool:
        return "prefill" in group_roles[p.prefill] and "decode" in group_roles[p.decode]

    devices = [device for device, _, _ in groups.values()]
    try:
        plan = make_plan(model, devices, link, request, (transfer_mode,), eligible)
    except PlannerError as exc:
        raise NoPlacementError(str(exc), excluded) from None
    first_node = {label: names[0] for label, (_, _, names) in groups.items()}
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
