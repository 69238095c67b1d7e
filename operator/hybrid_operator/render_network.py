"""Services `<name>-prefill`, `<name>-kv` (gRPC) and `<name>-api` (HTTP), the prefill NetworkPolicy, the
ServiceMonitor, the KV link's cert-manager Certificate."""

from __future__ import annotations

from hybrid_operator.models import HybridInference
from hybrid_operator.render_common import (
    DECODE,
    KV_DATA_PORT,
    KV_SUFFIX,
    PREFILL,
    PREFILL_PORT,
    Manifest,
    child_name,
    metadata,
    selector_labels,
)

API_SUFFIX = "api"


def _grpc_port() -> dict[str, object]:
    """The prefill worker's gRPC KV port, as both prefill Services expose it."""
    return {
        "name": "grpc",
        "port": PREFILL_PORT,
        "targetPort": "grpc",
        "protocol": "TCP",
        "appProtocol": "grpc",
    }


def _data_port() -> dict[str, object]:
    """The prefill worker's KV data connection port (docs/kv-wire.md), beside gRPC on both Services."""
    return {"name": "kv-data", "port": KV_DATA_PORT, "targetPort": "kv-data", "protocol": "TCP"}


def prefill_service(cr: HybridInference) -> Manifest:
    """ClusterIP Service in front of the prefill pods: the gRPC KV port and the metrics port."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata(cr, child_name(cr, PREFILL), PREFILL),
        "spec": {
            "type": "ClusterIP",
            "selector": selector_labels(cr, PREFILL),
            "ports": [
                _grpc_port(),
                _data_port(),
                {"name": "metrics", "port": cr.spec.metrics.port, "targetPort": "metrics", "protocol": "TCP"},
            ],
        },
    }


def kv_service(cr: HybridInference) -> Manifest:
    """Headless Service `<name>-kv`: DNS answers one address per ready prefill pod, so the decode
    worker's gRPC channel (round_robin) spreads its requests over every prefill replica; a ClusterIP
    would pin each decode pod's single HTTP/2 connection to one replica."""
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata(cr, child_name(cr, KV_SUFFIX), PREFILL),
        "spec": {
            "clusterIP": "None",
            "selector": selector_labels(cr, PREFILL),
            "ports": [_grpc_port(), _data_port()],
        },
    }


def tls_dns_names(cr: HybridInference) -> list[str]:
    """The SANs the KV link's server certificate needs: the decode pods dial `<name>-kv`; `<name>-prefill`
    serves tools that use the ClusterIP Service; each in short, namespaced and .svc forms."""
    names = []
    for service in (child_name(cr, KV_SUFFIX), child_name(cr, PREFILL)):
        names += [service, f"{service}.{cr.namespace}", f"{service}.{cr.namespace}.svc"]
    return names


def certificate(cr: HybridInference) -> Manifest | None:
    """cert-manager.io/v1 Certificate issuing kvTransfer.tls.secretName, when certManager is set."""
    tls = cr.spec.kv_transfer.tls
    if not tls.enabled or tls.cert_manager is None:
        return None
    return {
        "apiVersion": "cert-manager.io/v1",
        "kind": "Certificate",
        "metadata": metadata(cr, child_name(cr, "kv-tls")),
        "spec": {
            "secretName": tls.secret_name,
            "dnsNames": tls_dns_names(cr),
            # One key pair serves prefill and, with mutual TLS, authenticates decode as a client.
            "usages": ["digital signature", "key encipherment", "server auth", "client auth"],
            "issuerRef": {
                "name": tls.cert_manager.issuer_name,
                "kind": tls.cert_manager.issuer_kind,
                "group": "cert-manager.io",
            },
        },
    }


def api_service(cr: HybridInference) -> Manifest:
    """ClusterIP Service `<name>-api` in front of the decode pods: the OpenAI-compatible API."""
    port = cr.spec.serving.port
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": metadata(cr, child_name(cr, API_SUFFIX), DECODE),
        "spec": {
            "type": "ClusterIP",
            "selector": selector_labels(cr, DECODE),
            "ports": [
                {"name": "http", "port": port, "targetPort": "http", "protocol": "TCP", "appProtocol": "http"}
            ],
        },
    }


def prefill_network_policy(cr: HybridInference) -> Manifest:
    """Only this instance's decode pods may reach the prefill KV ports; metrics stay open to scrapers."""
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": metadata(cr, child_name(cr, PREFILL), PREFILL),
        "spec": {
            "podSelector": {"matchLabels": selector_labels(cr, PREFILL)},
            "policyTypes": ["Ingress"],
            "ingress": [
                {
                    "from": [{"podSelector": {"matchLabels": selector_labels(cr, DECODE)}}],
                    "ports": [
                        {"port": PREFILL_PORT, "protocol": "TCP"},
                        {"port": KV_DATA_PORT, "protocol": "TCP"},
                    ],
                },
                {"ports": [{"port": cr.spec.metrics.port, "protocol": "TCP"}]},
            ],
        },
    }


def service_monitor(cr: HybridInference) -> Manifest:
    """Prometheus Operator ServiceMonitor scraping both Services (each matches the port it has)."""
    return {
        "apiVersion": "monitoring.coreos.com/v1",
        "kind": "ServiceMonitor",
        "metadata": metadata(cr, cr.name),
        "spec": {
            "selector": {"matchLabels": selector_labels(cr)},
            "endpoints": [
                {"port": port, "path": "/metrics", "interval": "15s", "relabelings": SCRAPE_RELABELINGS}
                for port in ("metrics", "http")
            ],
        },
    }


# The target labels the dashboard and alerts select on (docs/monitoring.md); the chart's
# `hybrid-inference.monitoringRelabelings` helper applies the same two.
SCRAPE_RELABELINGS = [
    {
        "sourceLabels": ["__meta_kubernetes_pod_label_app_kubernetes_io_instance"],
        "targetLabel": "hybridinference",
    },
    {"sourceLabels": ["__meta_kubernetes_pod_label_app_kubernetes_io_component"], "targetLabel": "component"},
]
