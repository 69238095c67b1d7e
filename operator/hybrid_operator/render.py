"""Spec → manifests: every child object of one HybridInference, as plain dicts (pure; no API calls)."""

from __future__ import annotations

from hybrid_operator.config import OperatorConfig
from hybrid_operator.models import HybridInference
from hybrid_operator.placement import NodePlacement
from hybrid_operator.render_common import Manifest
from hybrid_operator.render_network import (
    api_service,
    certificate,
    kv_service,
    prefill_network_policy,
    prefill_service,
    service_monitor,
)
from hybrid_operator.render_workers import decode_deployment, prefill_deployment
from hybrid_operator.validation import resolved_dtype


def with_placement(cr: HybridInference, placement: NodePlacement) -> HybridInference:
    """The resource with each role's nodeSelector replaced by the one placement chose (auto mode)."""
    if placement.prefill_selector is None and placement.decode_selector is None:
        return cr
    prefill = cr.spec.prefill.model_copy(update={"node_selector": placement.prefill_selector})
    decode = cr.spec.decode.model_copy(update={"node_selector": placement.decode_selector})
    spec = cr.spec.model_copy(update={"prefill": prefill, "decode": decode})
    return cr.model_copy(update={"spec": spec})


def with_resolved_dtype(cr: HybridInference) -> HybridInference:
    """The resource with `model.dtype` explicit, the same for both roles (validation.resolved_dtype)."""
    model = cr.spec.model.model_copy(update={"dtype": resolved_dtype(cr)})
    return cr.model_copy(update={"spec": cr.spec.model_copy(update={"model": model})})


def render(cr: HybridInference, placement: NodePlacement, config: OperatorConfig) -> list[Manifest]:
    """All children in apply order: the NetworkPolicy before the pods it protects, Services, Deployments."""
    placed = with_placement(with_resolved_dtype(cr), placement)
    issued = certificate(placed)
    manifests = [
        prefill_network_policy(placed),
        *([issued] if issued else []),
        prefill_service(placed),
        kv_service(placed),
        api_service(placed),
        prefill_deployment(placed, config),
        decode_deployment(placed, config, placement),
    ]
    if cr.spec.metrics.service_monitor:
        manifests.append(service_monitor(placed))
    return manifests
