"""Children of a HybridInference whose decode role runs on a native agent (pure; no API calls).

The agent gets an assignment ConfigMap (the rendered `hybrid-inference decode` flags); `<name>-api`
reaches its worker through an EndpointSlice the operator writes; the prefill Service becomes a
NodePort (externalTrafficPolicy Local, so the agent's address survives for the NetworkPolicy) for
both KV ports, gRPC and the data connection, whose NodePort the assignment passes as
`--prefill-data-port`.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Sequence
from importlib import metadata as package_metadata
from typing import Any

from hybrid_operator.agent_contract import (
    AGENT_LABEL,
    ASSIGNMENT_PROTOCOL,
    DATA_FLAGS,
    DATA_OPERATOR_VERSION,
    DATA_OWNER,
    DATA_PORT,
    DATA_PROTOCOL,
)
from hybrid_operator.agent_world import AgentState, AgentView, LeaseReading, judge
from hybrid_operator.models import AgentFallback, HybridInference
from hybrid_operator.placement import NodePlacement, decode_prediction_flags
from hybrid_operator.render_common import (
    DECODE,
    KV_DATA_PORT,
    PREFILL,
    PREFILL_PORT,
    Manifest,
    child_name,
    metadata,
)
from hybrid_operator.render_network import API_SUFFIX
from hybrid_operator.render_workers import decode_flags

AGENT_SUFFIX = "agent"  # ConfigMap `<name>-agent` and EndpointSlice `<name>-api-agent`
SLICE_MANAGER = "hybrid-inference-operator"  # endpointslice.kubernetes.io/managed-by
# Flags the agent chooses itself (it knows its hardware and network), never the operator.
AGENT_OWNED_FLAGS = ("--device", "--host")
TLS_FILES = {"cert": "tls.crt", "key": "tls.key", "ca": "ca.crt"}  # --tls-<key> -> file in tlsDir


def operator_version() -> str:
    """The installed hybrid-inference version (shown to an agent that refuses the assignment)."""
    try:
        return package_metadata.version("hybrid-inference")
    except package_metadata.PackageNotFoundError:
        return "0+unknown"


def assignment_flags(
    cr: HybridInference, prefill: str, placement: NodePlacement | None = None, data_port: int | None = None
) -> dict[str, object]:
    """`hybrid-inference decode` flags for the agent: paths on its machine, the reachable prefill (and
    `data_port`, the KV data port's NodePort on the same host), and (auto placement) the planner's
    prediction and threshold."""
    target = cr.spec.decode.agent
    assert target is not None, "assignment_flags needs decode.agent"
    planned = decode_prediction_flags(cr, placement) if placement is not None else {}
    rendered = decode_flags(cr) | planned
    flags = {k: v for k, v in rendered.items() if k not in AGENT_OWNED_FLAGS and v is not None}
    flags["--model"] = target.model_path or cr.spec.model.source
    flags["--prefill"] = prefill
    flags["--prefill-data-port"] = data_port  # None: the address the prefill worker announces
    tls_dir = target.tls_dir.rstrip("/")
    flags.update({f"--tls-{key}": f"{tls_dir}/{file}" for key, file in TLS_FILES.items()})
    return {k: v for k, v in flags.items() if v is not None}


def assignment_data(
    cr: HybridInference, prefill: str, placement: NodePlacement | None = None, data_port: int | None = None
) -> dict[str, str]:
    """The assignment ConfigMap's data (its digest is what the agent reports back)."""
    return {
        DATA_PROTOCOL: str(ASSIGNMENT_PROTOCOL),
        DATA_OPERATOR_VERSION: operator_version(),
        DATA_OWNER: f"{cr.namespace}/{cr.name}",
        DATA_PORT: str(cr.spec.serving.port),
        DATA_FLAGS: json.dumps(assignment_flags(cr, prefill, placement, data_port), sort_keys=True),
    }


def assignment(cr: HybridInference, data: dict[str, str]) -> Manifest:
    """ConfigMap `<name>-agent`, labelled with the agent's name (the agent watches that label)."""
    target = cr.spec.decode.agent
    assert target is not None, "assignment needs decode.agent"
    meta = metadata(cr, child_name(cr, AGENT_SUFFIX), DECODE)
    meta["labels"][AGENT_LABEL] = target.name
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": data}


def endpoint_slice(cr: HybridInference, view: AgentView) -> Manifest | None:
    """EndpointSlice `<name>-api-agent` of Service `<name>-api`: the agent's worker (None: no address)."""
    address, report = view.lease.address, view.report
    if not address or report is None or not report.port:
        return None
    family = "IPv6" if ipaddress.ip_address(address).version == 6 else "IPv4"
    meta = metadata(cr, child_name(cr, f"{API_SUFFIX}-{AGENT_SUFFIX}"), DECODE)
    meta["labels"].update(
        {
            "kubernetes.io/service-name": child_name(cr, API_SUFFIX),
            "endpointslice.kubernetes.io/managed-by": SLICE_MANAGER,
        }
    )
    return {
        "apiVersion": "discovery.k8s.io/v1",
        "kind": "EndpointSlice",
        "metadata": meta,
        "addressType": family,
        "endpoints": [{"addresses": [address], "conditions": {"ready": view.serving}}],
        "ports": [{"name": "http", "port": report.port, "protocol": "TCP", "appProtocol": "http"}],
    }


def adapt(manifests: Sequence[Manifest], cr: HybridInference, reading: LeaseReading) -> list[Manifest]:
    """The pod-path children changed for an agent: NodePort prefill, agent admitted, decode pods as
    fallback only (scaled to 0 while the agent serves) or not at all, `<name>-api` selector-less."""
    target = cr.spec.decode.agent
    assert target is not None, "adapt needs decode.agent"
    lost = judge(reading, "", "").state == AgentState.LOST
    address = reading.lease.address
    result = []
    for manifest in manifests:
        name, kind = manifest["metadata"]["name"], manifest["kind"]
        if kind == "Deployment" and name == child_name(cr, DECODE):
            if target.fallback == AgentFallback.NONE:
                continue
            manifest["spec"]["replicas"] = cr.spec.decode.replicas if lost else 0
        elif kind == "Service" and name == child_name(cr, PREFILL):
            manifest["spec"].update(type="NodePort", externalTrafficPolicy="Local")
        elif kind == "Service" and name == child_name(cr, API_SUFFIX):
            if target.fallback == AgentFallback.NONE:  # with a fallback, its pods join through the selector
                manifest["spec"].pop("selector", None)
        elif kind == "NetworkPolicy" and address:
            manifest["spec"]["ingress"].append(_admit(address))
        result.append(manifest)
    return result


def _admit(address: str) -> dict[str, Any]:
    """The agent's address on both KV ports: gRPC and the data connection (both require mTLS)."""
    bits = 128 if ipaddress.ip_address(address).version == 6 else 32
    return {
        "from": [{"ipBlock": {"cidr": f"{address}/{bits}"}}],
        "ports": [{"port": port, "protocol": "TCP"} for port in (PREFILL_PORT, KV_DATA_PORT)],
    }
