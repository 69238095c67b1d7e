"""Rendered per-role volumes, the weights download step, pod templates, the headless KV Service, the
cert-manager Certificate and the rollout deadline (pure: spec -> manifests, plus the pre-apply checks)."""

from __future__ import annotations

import copy
from typing import Any

import kubernetes_validate
import pytest
import yaml
from crd_schema import ROOT
from helm_render import SUPPORTED_VERSIONS
from hybrid_operator.config import OperatorConfig
from hybrid_operator.models import HybridInference, parse
from hybrid_operator.placement import NodePlacement
from hybrid_operator.render import render
from hybrid_operator.validation import SpecProblem, check_spec

SAMPLE = ROOT / "tests" / "data" / "hybridinference" / "valid" / "per-role-volumes-and-pod-template.yaml"
CONFIG = OperatorConfig(prefill_image="reg/prefill:1", decode_image="reg/decode:1")
ANYWHERE = NodePlacement(("n1",), ("n1",), reason="test")


def body(**spec_updates: Any) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(SAMPLE.read_text())
    loaded["metadata"].update(namespace="inference", uid="uid-1", generation=1)
    loaded["spec"].update(copy.deepcopy(spec_updates))
    return loaded


def objects(cr: HybridInference) -> dict[str, dict[str, Any]]:
    return {f"{m['kind']}/{m['metadata']['name']}": m for m in render(cr, ANYWHERE, CONFIG)}


def pod(cr: HybridInference, role: str) -> dict[str, Any]:
    template: dict[str, Any] = objects(cr)[f"Deployment/k3s-two-nodes-{role}"]["spec"]["template"]
    return template


def container_env(spec: dict[str, Any], name: str) -> dict[str, Any]:
    container = next(c for c in spec["containers"] + spec.get("initContainers", []) if c["name"] == name)
    return {e["name"]: e.get("value", e.get("valueFrom")) for e in container["env"]}


def test_each_role_mounts_its_own_claim_and_downloads_the_weights_first() -> None:
    cr = parse(body())
    for role, claim in (("prefill", "models-gpu"), ("decode", "models-mac")):
        spec = pod(cr, role)["spec"]
        volume = next(v for v in spec["volumes"] if v["name"] == "model")
        assert volume["persistentVolumeClaim"] == {"claimName": claim, "readOnly": False}  # init writes
        main = next(c for c in spec["containers"] if c["name"] == role)
        assert next(m for m in main["volumeMounts"] if m["name"] == "model")["readOnly"] is True
        (init,) = spec["initContainers"]
        assert init["command"][-2:] == ["HuggingFaceTB/SmolLM2-135M-Instruct", "main"]
        assert init["image"] == main["image"]
        env = container_env(spec, "download-model")
        assert env["HF_HOME"] == "/models/.huggingface" and env["HF_HUB_OFFLINE"] == "0"
        assert env["HF_TOKEN"] == {"secretKeyRef": {"name": "hf-token", "key": "token"}}
        assert container_env(spec, role)["HF_HUB_OFFLINE"] == "1"  # the worker itself never downloads
        assert init["securityContext"]["readOnlyRootFilesystem"] is True


def test_no_host_path_unless_asked_for() -> None:
    for path in sorted((ROOT / "examples").glob("*.yaml")):
        loaded = yaml.safe_load(path.read_text())
        loaded["metadata"].update(namespace="n", uid="u")
        for manifest in render(parse(loaded), ANYWHERE, CONFIG):
            assert "hostPath" not in str(manifest), path.name


def test_pod_template_fields_merge_and_the_operator_keeps_its_own() -> None:
    prefill = pod(parse(body()), "prefill")
    assert prefill["metadata"]["labels"]["team"] == "ml"
    assert prefill["metadata"]["labels"]["app.kubernetes.io/component"] == "prefill"
    assert prefill["metadata"]["annotations"] == {"prometheus.io/scrape": "true"}
    spec = prefill["spec"]
    assert spec["imagePullSecrets"] == [{"name": "regcred"}]
    assert spec["serviceAccountName"] == "prefill-workers"
    assert spec["priorityClassName"] == "inference"
    assert spec["automountServiceAccountToken"] is False and spec["securityContext"]["runAsNonRoot"]
    env = container_env(spec, "prefill")
    assert env["NCCL_DEBUG"] == "WARN" and env["HYBRID_INFERENCE_DTYPE"] == "bfloat16"
    decode = pod(parse(body()), "decode")["spec"]
    assert decode["topologySpreadConstraints"][0]["topologyKey"] == "kubernetes.io/hostname"


REJECTED = "PodTemplateRejected"
DTYPE_ENV = [{"name": "HYBRID_INFERENCE_DTYPE", "value": "float16"}]


@pytest.mark.parametrize(
    ("template", "reason", "named"),
    [
        ({"spec": {"containers": [{"name": "decode", "image": "x"}]}}, REJECTED,
         "containers[0].image: owned by the operator; set spec.decode.image instead"),
        ({"spec": {"nodeSelector": {"a": "b"}}}, REJECTED, "set spec.decode.nodeSelector instead"),
        ({"spec": {"hostNetwork": True}}, REJECTED, "decode.podTemplate.spec.hostNetwork: owned"),
        ({"spec": {"containers": [{"name": "decode", "env": DTYPE_ENV}]}},
         "DTypeMismatch", "set spec.model.dtype instead"),
        ({"metadata": {"labels": {"app.kubernetes.io/instance": "other"}}}, REJECTED,
         "app.kubernetes.io/instance: the operator's selector label"),
        ({"spec": {"tolerations": [{"key": "k", "efect": "NoSchedule"}]}}, REJECTED,
         "decode.podTemplate.spec.tolerations[0].efect: unknown field"),
        ({"spec": {"volumes": [{"name": "model", "emptyDir": {}}]}}, REJECTED, "'model': needs a name"),
        ({"spec": {"containers": [{"name": "sidecar"}]}}, REJECTED, "must be 'decode'"),
    ],
)  # fmt: skip
def test_refused_pod_template_fields_are_named_with_the_fix(
    template: dict[str, Any], reason: str, named: str
) -> None:
    decode = {"device": "cpu", "podTemplate": template}
    with pytest.raises(SpecProblem) as refused:
        check_spec(parse(body(decode=decode)))
    assert refused.value.reason == reason
    assert named in str(refused.value)


def test_decode_pods_dial_the_headless_kv_service() -> None:
    found = objects(parse(body()))
    kv = found["Service/k3s-two-nodes-kv"]
    assert kv["spec"]["clusterIP"] == "None"
    assert kv["spec"]["selector"]["app.kubernetes.io/component"] == "prefill"
    decode_env = container_env(found["Deployment/k3s-two-nodes-decode"]["spec"]["template"]["spec"], "decode")
    assert decode_env["HYBRID_INFERENCE_PREFILL"] == "k3s-two-nodes-kv:50051"


def test_cert_manager_certificate_names_every_address_the_decode_pods_dial() -> None:
    certificate = objects(parse(body()))["Certificate/k3s-two-nodes-kv-tls"]
    spec = certificate["spec"]
    assert spec["secretName"] == "kv-tls"
    assert spec["issuerRef"] == {"name": "cluster-ca", "kind": "ClusterIssuer", "group": "cert-manager.io"}
    assert {"k3s-two-nodes-kv", "k3s-two-nodes-kv.inference.svc", "k3s-two-nodes-prefill"} <= set(
        spec["dnsNames"]
    )
    assert "client auth" in spec["usages"] and "server auth" in spec["usages"]
    plain = body(kvTransfer={"tls": {"enabled": True, "secretName": "kv-tls"}})
    assert not [k for k in objects(parse(plain)) if k.startswith("Certificate/")]


def test_rollout_deadline_defaults_to_thirty_minutes_and_is_configurable() -> None:
    found = objects(parse(body()))
    assert found["Deployment/k3s-two-nodes-prefill"]["spec"]["progressDeadlineSeconds"] == 3600
    assert found["Deployment/k3s-two-nodes-decode"]["spec"]["progressDeadlineSeconds"] == 1800


@pytest.mark.parametrize("version", [SUPPORTED_VERSIONS[0], SUPPORTED_VERSIONS[-1]])
def test_rendered_children_of_the_sample_validate_strictly(version: str) -> None:
    for manifest in render(parse(body()), ANYWHERE, CONFIG):
        if manifest["kind"] not in ("ServiceMonitor", "Certificate"):
            kubernetes_validate.validate(manifest, version, strict=True)
