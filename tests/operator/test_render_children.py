"""Rendering spec → manifests, field by field, and every rendered object strictly valid Kubernetes."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from crd_schema import ROOT
from helm_render import SUPPORTED_VERSIONS
from hybrid_operator.config import OperatorConfig
from hybrid_operator.models import HybridInference, parse
from hybrid_operator.placement import NodePlacement, Prediction
from hybrid_operator.render import render

SAMPLES = sorted((ROOT / "tests" / "data" / "hybridinference" / "valid").glob("*.yaml")) + sorted(
    (ROOT / "examples").glob("*.yaml")
)
CONFIG = OperatorConfig(prefill_image="reg/prefill:1", decode_image="reg/decode:1")
ANYWHERE = NodePlacement(("n1",), ("n1",), reason="test")


def resource(path_or_body: Path | dict[str, Any], **spec_updates: Any) -> HybridInference:
    """A parsed resource as read from the API (namespace and uid set), with top-level spec overrides."""
    body = yaml.safe_load(path_or_body.read_text()) if isinstance(path_or_body, Path) else path_or_body
    body["metadata"].update(namespace="inference", uid="uid-1", generation=3)
    body["spec"] = {**body.get("spec", {}), **spec_updates}
    return parse(body)


def by_name(manifests: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {f"{m['kind']}/{m['metadata']['name']}": m for m in manifests}


def container(manifests: list[dict[str, Any]], deployment: str) -> dict[str, Any]:
    result: dict[str, Any] = by_name(manifests)[f"Deployment/{deployment}"]["spec"]["template"]["spec"][
        "containers"
    ][0]
    return result


def env_of(manifests: list[dict[str, Any]], deployment: str) -> dict[str, str]:
    """Plain values; one from the downward API reads `fieldRef:<path>`."""
    return {
        e["name"]: e["value"] if "value" in e else f"fieldRef:{e['valueFrom']['fieldRef']['fieldPath']}"
        for e in container(manifests, deployment)["env"]
    }


SPARK = ROOT / "examples" / "spark-plus-mac.yaml"
TLS = ROOT / "tests" / "data" / "hybridinference" / "valid" / "tls-mutual.yaml"


def test_spark_plus_mac_puts_each_role_on_its_node() -> None:
    objs = by_name(render(resource(SPARK), ANYWHERE, CONFIG))
    prefill = objs["Deployment/spark-plus-mac-prefill"]["spec"]
    decode = objs["Deployment/spark-plus-mac-decode"]["spec"]
    assert prefill["template"]["spec"]["nodeSelector"] == {"hybridinference.dev/role": "prefill"}
    assert prefill["template"]["spec"]["runtimeClassName"] == "nvidia"
    assert prefill["strategy"] == {"type": "Recreate"}  # one GPU: no surge
    assert decode["template"]["spec"]["nodeSelector"] == {"hybridinference.dev/role": "decode"}
    assert decode["template"]["spec"]["tolerations"] == [
        {"key": "hybridinference.dev/mac", "operator": "Exists", "effect": "NoSchedule"}
    ]
    assert decode["strategy"] == {"type": "RollingUpdate"}
    assert "runtimeClassName" not in decode["template"]["spec"]


def test_gpu_and_resources_go_into_requests_and_limits() -> None:
    manifests = render(resource(SPARK), ANYWHERE, CONFIG)
    assert container(manifests, "spark-plus-mac-prefill")["resources"] == {
        "requests": {"cpu": "4", "memory": "32Gi", "nvidia.com/gpu": 1},
        "limits": {"memory": "48Gi", "nvidia.com/gpu": 1},
    }
    assert container(manifests, "spark-plus-mac-decode")["resources"] == {
        "requests": {"cpu": "8", "memory": "40Gi"},
        "limits": {"memory": "56Gi"},
    }
    minimal = render(
        resource(
            {
                "metadata": {"name": "m"},
                "apiVersion": "hybridinference.dev/v1alpha1",
                "kind": "HybridInference",
            }
        ),
        ANYWHERE,
        CONFIG,
    )
    assert "resources" not in container(minimal, "m-prefill")


def test_worker_command_lines_follow_the_cli_contract() -> None:
    manifests = render(resource(SPARK), ANYWHERE, CONFIG)
    prefill, decode = env_of(manifests, "spark-plus-mac-prefill"), env_of(manifests, "spark-plus-mac-decode")
    assert container(manifests, "spark-plus-mac-prefill")["command"] == ["hybrid-inference", "prefill"]
    assert container(manifests, "spark-plus-mac-decode")["command"] == ["hybrid-inference", "decode"]
    assert (
        prefill["HYBRID_INFERENCE_MODEL"]
        == decode["HYBRID_INFERENCE_MODEL"]
        == "meta-llama/Llama-3.1-8B-Instruct"
    )
    assert prefill["HYBRID_INFERENCE_PORT"] == "50051"
    assert prefill["HYBRID_INFERENCE_KV_DATA_PORT"] == "50052"
    assert prefill["HYBRID_INFERENCE_KV_DATA_HOST"] == "fieldRef:status.podIP"  # this replica's address
    assert prefill["HYBRID_INFERENCE_MODE"] == "layerwise"
    assert prefill["HYBRID_INFERENCE_DEVICE"] == "cuda" and decode["HYBRID_INFERENCE_DEVICE"] == "cpu"
    assert decode["HYBRID_INFERENCE_PREFILL"] == "spark-plus-mac-kv:50051"  # the headless Service
    assert decode["HYBRID_INFERENCE_MAX_MODEL_LEN"] == "16384"
    assert decode["HYBRID_INFERENCE_REMOTE_PREFILL_MIN_TOKENS"] == "auto"
    assert decode["HF_HOME"] == "/models/.huggingface"
    assert container(manifests, "spark-plus-mac-decode")["image"] == "reg/decode:1"


def test_kv_transfer_mode_reaches_the_decode_worker_that_asks_for_it() -> None:
    body = yaml.safe_load(SPARK.read_text())
    body["spec"]["kvTransfer"] = {**body["spec"].get("kvTransfer", {}), "mode": "bulk"}
    manifests = render(resource(body), ANYWHERE, CONFIG)
    prefill, decode = env_of(manifests, "spark-plus-mac-prefill"), env_of(manifests, "spark-plus-mac-decode")
    assert decode["HYBRID_INFERENCE_KV_TRANSFER_MODE"] == "bulk"  # each request names the mode
    assert prefill["HYBRID_INFERENCE_MODE"] == "bulk"  # the default for requests that name none


def test_no_model_source_means_the_demo_model_flag_is_absent() -> None:
    body = {
        "apiVersion": "hybridinference.dev/v1alpha1",
        "kind": "HybridInference",
        "metadata": {"name": "d"},
    }
    manifests = render(resource(body), ANYWHERE, CONFIG)
    assert "HYBRID_INFERENCE_MODEL" not in env_of(manifests, "d-prefill")
    assert env_of(manifests, "d-decode")["HYBRID_INFERENCE_CACHE_DIR"] == "/cache"


def test_probes_use_grpc_health_for_prefill_and_http_for_decode() -> None:
    manifests = render(resource(SPARK), ANYWHERE, CONFIG)
    prefill, decode = (
        container(manifests, "spark-plus-mac-prefill"),
        container(manifests, "spark-plus-mac-decode"),
    )
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert prefill[probe]["grpc"] == {"port": 50051}
    assert decode["livenessProbe"]["httpGet"] == {"path": "/health", "port": "http"}
    assert decode["readinessProbe"]["httpGet"] == {"path": "/ready", "port": "http"}
    assert decode["ports"] == [{"name": "http", "containerPort": 8000, "protocol": "TCP"}]


def test_tls_mounts_the_secret_and_uses_tcp_probes_for_prefill() -> None:
    manifests = render(resource(TLS), ANYWHERE, CONFIG)
    prefill, decode = env_of(manifests, "secure-prefill"), env_of(manifests, "secure-decode")
    tls = "/etc/hybrid-inference/tls"
    assert (prefill["HYBRID_INFERENCE_TLS_CERT"], prefill["HYBRID_INFERENCE_TLS_CA"]) == (
        f"{tls}/tls.crt",
        f"{tls}/ca.crt",
    )
    assert (decode["HYBRID_INFERENCE_TLS_KEY"], decode["HYBRID_INFERENCE_TLS_CA"]) == (
        f"{tls}/tls.key",
        f"{tls}/ca.crt",
    )
    assert container(manifests, "secure-prefill")["readinessProbe"]["tcpSocket"] == {"port": 50051}
    pod = by_name(manifests)["Deployment/secure-decode"]["spec"]["template"]["spec"]
    assert {"name": "tls", "secret": {"secretName": "kv-tls", "defaultMode": 0o440}} in pod["volumes"]
    one_way = render(
        resource(TLS, kvTransfer={"tls": {"enabled": True, "secretName": "kv-tls"}}), ANYWHERE, CONFIG
    )
    assert "HYBRID_INFERENCE_TLS_CA" not in env_of(one_way, "secure-prefill")
    assert "HYBRID_INFERENCE_TLS_CERT" not in env_of(one_way, "secure-decode")


@pytest.mark.parametrize("path", SAMPLES, ids=lambda p: p.name)
def test_every_pod_meets_restricted_pod_security(path: Path) -> None:
    for manifest in render(resource(path), ANYWHERE, CONFIG):
        if manifest["kind"] != "Deployment":
            continue
        pod = manifest["spec"]["template"]["spec"]
        assert pod["securityContext"]["runAsNonRoot"] is True
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        assert pod["automountServiceAccountToken"] is False
        for ctr in pod["containers"]:
            ctx = ctr["securityContext"]
            assert ctx["allowPrivilegeEscalation"] is False and ctx["readOnlyRootFilesystem"] is True
            assert ctx["capabilities"] == {"drop": ["ALL"]}
            assert {m["mountPath"] for m in ctr["volumeMounts"]} >= {"/tmp", "/cache"}


@pytest.mark.parametrize("path", SAMPLES, ids=lambda p: p.name)
def test_every_child_is_owned_and_labelled(path: Path) -> None:
    cr = resource(path)
    for manifest in render(cr, ANYWHERE, CONFIG):
        meta = manifest["metadata"]
        assert meta["namespace"] == "inference"
        assert meta["ownerReferences"] == [
            {"apiVersion": "hybridinference.dev/v1alpha1", "kind": "HybridInference", "name": cr.name,
             "uid": "uid-1", "controller": True, "blockOwnerDeletion": True}
        ]  # fmt: skip
        assert meta["labels"]["app.kubernetes.io/name"] == "hybrid-inference"
        assert meta["labels"]["app.kubernetes.io/instance"] == cr.name


def test_network_policy_admits_only_this_instances_decode_pods_to_the_kv_port() -> None:
    objs = by_name(render(resource(SPARK), ANYWHERE, CONFIG))
    policy = objs["NetworkPolicy/spark-plus-mac-prefill"]["spec"]
    prefill_pods = objs["Deployment/spark-plus-mac-prefill"]["spec"]["template"]["metadata"]["labels"]
    decode_pods = objs["Deployment/spark-plus-mac-decode"]["spec"]["template"]["metadata"]["labels"]
    assert policy["podSelector"]["matchLabels"].items() <= prefill_pods.items()
    kv_rule = policy["ingress"][0]
    assert kv_rule["ports"] == [{"port": 50051, "protocol": "TCP"}, {"port": 50052, "protocol": "TCP"}]
    allowed = kv_rule["from"][0]["podSelector"]["matchLabels"]
    assert allowed.items() <= decode_pods.items()
    assert allowed["app.kubernetes.io/instance"] == "spark-plus-mac"  # not another instance's decode pods
    assert not allowed.items() <= prefill_pods.items()


def test_services_select_their_role_and_expose_the_contract_ports() -> None:
    objs = by_name(render(resource(TLS), ANYWHERE, CONFIG))
    prefill, api = objs["Service/secure-prefill"]["spec"], objs["Service/secure-api"]["spec"]
    assert prefill["selector"]["app.kubernetes.io/component"] == "prefill"
    assert [(p["name"], p["port"]) for p in prefill["ports"]] == [
        ("grpc", 50051),
        ("kv-data", 50052),
        ("metrics", 9191),
    ]
    assert api["selector"]["app.kubernetes.io/component"] == "decode"
    assert [(p["name"], p["port"]) for p in api["ports"]] == [("http", 8080)]


def test_service_monitor_only_when_asked() -> None:
    assert "ServiceMonitor/secure" in by_name(render(resource(TLS), ANYWHERE, CONFIG))
    assert not [m for m in render(resource(SPARK), ANYWHERE, CONFIG) if m["kind"] == "ServiceMonitor"]


def test_service_monitor_labels_series_with_instance_and_component() -> None:
    monitor = by_name(render(resource(TLS), ANYWHERE, CONFIG))["ServiceMonitor/secure"]
    for endpoint in monitor["spec"]["endpoints"]:
        targets = {r["targetLabel"]: r["sourceLabels"] for r in endpoint["relabelings"]}
        assert targets == {
            "hybridinference": ["__meta_kubernetes_pod_label_app_kubernetes_io_instance"],
            "component": ["__meta_kubernetes_pod_label_app_kubernetes_io_component"],
        }


def test_placement_selectors_replace_the_spec_selectors() -> None:
    pinned = NodePlacement(("spark",), ("mac",), "auto", prefill_selector={"kubernetes.io/hostname": "spark"},
                       decode_selector={"kubernetes.io/hostname": "mac"})  # fmt: skip
    objs = by_name(render(resource(SPARK), pinned, CONFIG))
    pod = objs["Deployment/spark-plus-mac-prefill"]["spec"]["template"]["spec"]
    assert pod["nodeSelector"] == {"kubernetes.io/hostname": "spark"}


def test_a_prediction_reaches_the_decode_worker_as_gauges() -> None:
    prediction = Prediction("spark", "mac", ttft_seconds=1.47, decode_tokens_per_second=37.6,
                            speedup_vs_best_single_node=1.2)  # fmt: skip
    predicted = NodePlacement(("spark",), ("mac",), "auto", prediction=prediction)
    env = env_of(render(resource(SPARK), predicted, CONFIG), "spark-plus-mac-decode")
    assert env["HYBRID_INFERENCE_PREDICTED_TTFT_SECONDS"] == "1.47"
    assert env["HYBRID_INFERENCE_PREDICTED_DECODE_TOKENS_PER_SECOND"] == "37.6"
    assert "HYBRID_INFERENCE_PREDICTED_TTFT_SECONDS" not in env_of(
        render(resource(SPARK), ANYWHERE, CONFIG), "spark-plus-mac-decode"
    )


@pytest.mark.parametrize("version", SUPPORTED_VERSIONS)
def test_rendered_objects_validate_strictly_on_supported_kubernetes(version: str) -> None:
    for path in SAMPLES:
        for manifest in render(resource(path), ANYWHERE, CONFIG):
            if manifest["kind"] not in (
                "ServiceMonitor",
                "Certificate",
            ):  # CRD kinds: not in Kubernetes' schemas
                kubernetes_validate.validate(manifest, version, strict=True)


def test_strict_validation_catches_a_misspelled_field() -> None:
    deployment = next(m for m in render(resource(SPARK), ANYWHERE, CONFIG) if m["kind"] == "Deployment")
    deployment["spec"]["template"]["spec"]["nodeSelectors"] = {"a": "b"}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, SUPPORTED_VERSIONS[0], strict=True)
