"""Deployments `<name>-prefill` and `<name>-decode`: worker command line (as env), probes, volumes."""

from __future__ import annotations

import copy
from collections.abc import Mapping
from typing import Any

from hybrid_workers.enums import env_name

from hybrid_operator.config import OperatorConfig
from hybrid_operator.models import HybridInference, WorkerPoolSpec
from hybrid_operator.placement import GPU_RESOURCE, NodePlacement, decode_prediction_flags
from hybrid_operator.pod_template import merge
from hybrid_operator.render_common import (
    DECODE,
    KV_DATA_PORT,
    KV_SUFFIX,
    PREFILL,
    PREFILL_PORT,
    Manifest,
    child_name,
    container_security_context,
    labels,
    metadata,
    pod_security_context,
    selector_labels,
)
from hybrid_operator.render_model import download_init_container, model_mount_read_only, model_volume

TLS_DIR = "/etc/hybrid-inference/tls"
CACHE_DIR = "/cache"
# Model loading can take minutes (large weights from a network volume): startup probes allow 20 min
# before liveness takes over, so a slow load is not mistaken for a hung worker.
STARTUP_PERIOD_S = 10
STARTUP_FAILURES = 120


def env(flags: Mapping[str, object]) -> list[dict[str, str]]:
    """`{"--model": "m"}` -> `[{"name": "HYBRID_INFERENCE_MODEL", "value": "m"}]`; None values left out."""
    return [
        {"name": env_name(flag), "value": str(value)} for flag, value in flags.items() if value is not None
    ]


def _common_flags(cr: HybridInference, pool: WorkerPoolSpec) -> dict[str, object]:
    return {
        "--model": cr.spec.model.source,
        "--device": pool.device.value,
        "--dtype": cr.spec.model.dtype.value,
        "--host": "0.0.0.0",  # listen on the pod IP, not only loopback
    }


def _tls_flags(cr: HybridInference, role: str) -> dict[str, object]:
    tls = cr.spec.kv_transfer.tls
    if not tls.enabled:
        return {}
    # Prefill serves with the key pair and, for mTLS, checks clients against the CA; decode checks
    # the server against the CA and, for mTLS, presents the same key pair.
    key_pair = {"--tls-cert": f"{TLS_DIR}/tls.crt", "--tls-key": f"{TLS_DIR}/tls.key"}
    ca = {"--tls-ca": f"{TLS_DIR}/ca.crt"}
    if role == PREFILL:
        return {**key_pair, **(ca if tls.mutual else {})}
    return {**ca, **(key_pair if tls.mutual else {})}


def prefill_flags(cr: HybridInference) -> dict[str, object]:
    """The `hybrid-inference prefill` flags (docs/architecture.md "Command line") this instance needs."""
    kv = cr.spec.kv_transfer
    return {
        **_common_flags(cr, cr.spec.prefill),
        "--port": PREFILL_PORT,
        "--kv-data-port": KV_DATA_PORT,
        "--chunk-bytes": kv.chunk_bytes,
        "--mode": kv.mode.value,
        "--metrics-port": cr.spec.metrics.port,
        **_tls_flags(cr, PREFILL),
    }


def decode_flags(cr: HybridInference) -> dict[str, object]:
    """The `hybrid-inference decode` flags (docs/architecture.md "Command line") this instance needs."""
    serving = cr.spec.serving
    return {
        **_common_flags(cr, cr.spec.decode),
        # The headless Service: one DNS record per ready prefill pod, round-robin in the decode channel.
        "--prefill": f"{child_name(cr, KV_SUFFIX)}:{PREFILL_PORT}",
        "--port": serving.port,
        "--remote-prefill-min-tokens": serving.remote_prefill_min_tokens,
        "--fallback": serving.fallback.value,
        "--max-concurrency": serving.max_concurrency,
        "--max-model-len": serving.max_model_len,
        "--kv-compression": cr.spec.kv_transfer.compression.value,
        "--kv-transfer-mode": cr.spec.kv_transfer.mode.value,
        **_tls_flags(cr, DECODE),
    }


def volumes(cr: HybridInference, role: str = PREFILL) -> list[dict[str, Any]]:
    """Model volume, writable emptyDirs for /tmp and caches (the root filesystem is read-only), TLS."""
    result = [model_volume(cr, role), {"name": "tmp", "emptyDir": {}}, {"name": "cache", "emptyDir": {}}]
    tls = cr.spec.kv_transfer.tls
    if tls.enabled:
        result.append({"name": "tls", "secret": {"secretName": tls.secret_name, "defaultMode": 0o440}})
    return result


def volume_mounts(cr: HybridInference, role: str = PREFILL) -> list[dict[str, Any]]:
    """Mounts matching `volumes`; a scratch emptyDir model volume is writable (the demo model is written)."""
    mounts: list[dict[str, Any]] = [
        {
            "name": "model",
            "mountPath": cr.spec.model.volume.mount_path,
            "readOnly": model_mount_read_only(cr, role),
        },
        {"name": "tmp", "mountPath": "/tmp"},
        {"name": "cache", "mountPath": CACHE_DIR},
    ]
    if cr.spec.kv_transfer.tls.enabled:
        mounts.append({"name": "tls", "mountPath": TLS_DIR, "readOnly": True})
    return mounts


def runtime_env(cr: HybridInference) -> list[dict[str, str]]:
    """Non-flag environment: HF cache in the model volume, other caches in the writable emptyDir."""
    return [
        # As in the worker images: a Hugging Face cache lives in .huggingface/ on the model volume.
        {"name": "HF_HOME", "value": f"{cr.spec.model.volume.mount_path.rstrip('/')}/.huggingface"},
        {"name": "HF_HUB_OFFLINE", "value": "1"},  # workers never download; the volume holds the model
        {"name": "HF_MODULES_CACHE", "value": f"{CACHE_DIR}/hf-modules"},  # HF_HOME may be read-only
        {"name": "XDG_CACHE_HOME", "value": CACHE_DIR},
        {"name": "HYBRID_INFERENCE_CACHE_DIR", "value": CACHE_DIR},  # the default model is converted here
        {"name": "HOME", "value": "/tmp"},
    ]


def resources(pool: WorkerPoolSpec) -> dict[str, Any]:
    """requests/limits from the spec, with the GPU count in both (extended resources need equal values)."""
    requests = dict(pool.resources.requests)
    limits = dict(pool.resources.limits)
    if pool.gpus:
        requests[GPU_RESOURCE] = pool.gpus
        limits[GPU_RESOURCE] = pool.gpus
    return {key: value for key, value in (("requests", requests), ("limits", limits)) if value}


def prefill_probes(cr: HybridInference) -> dict[str, Any]:
    """grpc.health.v1 probes on the KV port; TCP when TLS is on (kubelet's gRPC probe speaks no TLS)."""
    check: dict[str, Any] = {"grpc": {"port": PREFILL_PORT}}
    if cr.spec.kv_transfer.tls.enabled:
        check = {"tcpSocket": {"port": PREFILL_PORT}}
    return _probes(check, check)


def decode_probes() -> dict[str, Any]:
    """HTTP probes: /health (alive) and /ready (model loaded, prefill reachable or fallback allowed)."""
    return _probes(
        {"httpGet": {"path": "/health", "port": "http"}}, {"httpGet": {"path": "/ready", "port": "http"}}
    )


def _probes(live: dict[str, Any], ready: dict[str, Any]) -> dict[str, Any]:
    return {
        "startupProbe": {
            **copy.deepcopy(live),
            "periodSeconds": STARTUP_PERIOD_S,
            "failureThreshold": STARTUP_FAILURES,
        },
        "livenessProbe": {
            **copy.deepcopy(live),
            "periodSeconds": 10,
            "timeoutSeconds": 5,
            "failureThreshold": 3,
        },
        "readinessProbe": {
            **copy.deepcopy(ready),
            "periodSeconds": 5,
            "timeoutSeconds": 3,
            "failureThreshold": 2,
        },
    }


def _pod_spec(cr: HybridInference, pool: WorkerPoolSpec, container: dict[str, Any]) -> dict[str, Any]:
    role = container["name"]
    spec: dict[str, Any] = {
        "automountServiceAccountToken": False,  # workers never talk to the Kubernetes API
        "enableServiceLinks": False,
        "securityContext": pod_security_context(),
        "containers": [container],
        "volumes": volumes(cr, role),
    }
    init = download_init_container(cr, container["image"], CACHE_DIR)
    if init is not None:
        spec["initContainers"] = [init]
    optional = {
        "nodeSelector": dict(pool.node_selector) if pool.node_selector else None,
        "tolerations": [t.model_dump(by_alias=True, exclude_none=True) for t in pool.tolerations] or None,
        "affinity": pool.affinity,
        "runtimeClassName": pool.runtime_class_name,
    }
    spec.update({key: value for key, value in optional.items() if value is not None})
    return spec


def _deployment(cr: HybridInference, role: str, pool: WorkerPoolSpec, container: dict[str, Any]) -> Manifest:
    # A GPU pod holding the only GPU cannot surge: replace it instead of rolling.
    strategy = {"type": "Recreate"} if pool.gpus else {"type": "RollingUpdate"}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": metadata(cr, child_name(cr, role), role),
        "spec": {
            "replicas": pool.replicas,
            "progressDeadlineSeconds": pool.progress_deadline_seconds,
            "selector": {"matchLabels": selector_labels(cr, role)},
            "strategy": strategy,
            "template": merge(
                role,
                pool.pod_template,
                {"metadata": {"labels": labels(cr, role)}, "spec": _pod_spec(cr, pool, container)},
            ),
        },
    }


def _container(cr: HybridInference, role: str, pool: WorkerPoolSpec, image: str) -> dict[str, Any]:
    container: dict[str, Any] = {
        "name": role,
        "image": pool.image or image,
        "imagePullPolicy": pool.image_pull_policy,
        "command": ["hybrid-inference", role],
        "securityContext": container_security_context(),
        "volumeMounts": volume_mounts(cr, role),
    }
    container_resources = resources(pool)
    if container_resources:
        container["resources"] = container_resources
    return container


def prefill_deployment(cr: HybridInference, config: OperatorConfig) -> Manifest:
    """Deployment `<name>-prefill`: `hybrid-inference prefill` with gRPC on 50051 and metrics."""
    container = _container(cr, PREFILL, cr.spec.prefill, config.prefill_image)
    # Each transfer's header names the replica's own address for its data connection (the decode
    # pods dial the headless Service, which may resolve to another replica).
    pod_ip = {
        "name": "HYBRID_INFERENCE_KV_DATA_HOST",
        "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}},
    }
    container["env"] = [*env(prefill_flags(cr)), pod_ip, *runtime_env(cr)]
    container["ports"] = [
        {"name": "grpc", "containerPort": PREFILL_PORT, "protocol": "TCP"},
        {"name": "kv-data", "containerPort": KV_DATA_PORT, "protocol": "TCP"},
        {"name": "metrics", "containerPort": cr.spec.metrics.port, "protocol": "TCP"},
    ]
    container.update(prefill_probes(cr))
    return _deployment(cr, PREFILL, cr.spec.prefill, container)


def decode_deployment(
    cr: HybridInference, config: OperatorConfig, placement: NodePlacement | None = None
) -> Manifest:
    """Deployment `<name>-decode`: `hybrid-inference decode` serving the OpenAI API (and /metrics).

    With a planned `placement` (auto mode) the decode worker also gets the prediction and threshold."""
    container = _container(cr, DECODE, cr.spec.decode, config.decode_image)
    planned = decode_prediction_flags(cr, placement) if placement is not None else {}
    container["env"] = env(decode_flags(cr) | planned) + runtime_env(cr)
    container["ports"] = [{"name": "http", "containerPort": cr.spec.serving.port, "protocol": "TCP"}]
    container.update(decode_probes())
    return _deployment(cr, DECODE, cr.spec.decode, container)
