"""The real kopf operator (`kopf run -m hybrid_operator`) against kmock's Kubernetes emulator.

One emulator and one operator serve the whole module (kopf's start-up costs seconds); each test works
on its own HybridInference name, so the tests do not depend on each other's order.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import emulated_cluster
import pytest
from emulated_cluster import EmulatedCluster, wait_for
from kopf.testing import KopfRunner

pytestmark = [pytest.mark.operator, pytest.mark.slow]

NS = "inference"
HINF = f"/apis/hybridinference.dev/v1alpha1/namespaces/{NS}/hybridinferences"
DEPLOYMENTS = f"/apis/apps/v1/namespaces/{NS}/deployments"
SERVICES = f"/api/v1/namespaces/{NS}/services"
POLICIES = f"/apis/networking.k8s.io/v1/namespaces/{NS}/networkpolicies"

SPARK = {
    "metadata": {
        "name": "spark",
        "labels": {"hybridinference.dev/role": "prefill", "kubernetes.io/arch": "arm64"},
    },
    "status": {"allocatable": {"nvidia.com/gpu": "1"}, "conditions": [{"type": "Ready", "status": "True"}]},
}
MAC = {
    "metadata": {
        "name": "mac",
        "labels": {"hybridinference.dev/role": "decode", "kubernetes.io/arch": "arm64"},
    },
    "spec": {"taints": [{"key": "hybridinference.dev/mac", "value": "true", "effect": "NoSchedule"}]},
    "status": {"conditions": [{"type": "Ready", "status": "True"}]},
}


def hybrid_inference(name: str, spec: dict[str, Any], generation: int = 1) -> dict[str, Any]:
    return emulated_cluster.hybrid_inference(NS, name, spec, generation)


SPARK_PLUS_MAC = {
    "model": {"source": "meta-llama/Llama-3.1-8B-Instruct", "dtype": "float16", "volume": {"pvc": "models"}},
    "prefill": {"device": "cuda", "gpus": 1, "nodeSelector": {"hybridinference.dev/role": "prefill"}},
    "decode": {
        "device": "cpu",
        "nodeSelector": {"hybridinference.dev/role": "decode"},
        "tolerations": [{"key": "hybridinference.dev/mac", "operator": "Exists", "effect": "NoSchedule"}],
    },
}


@pytest.fixture(scope="module")
def cluster() -> Iterator[EmulatedCluster]:
    emulated = EmulatedCluster().start()
    for node in (SPARK, MAC):
        emulated.create("/api/v1/nodes", {"apiVersion": "v1", "kind": "Node", **node})
    yield emulated
    emulated.stop()


@pytest.fixture(scope="module")
def operator(cluster: EmulatedCluster, tmp_path_factory: pytest.TempPathFactory) -> Iterator[KopfRunner]:
    kubeconfig = cluster.write_kubeconfig(tmp_path_factory.mktemp("kube") / "config", NS)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("KUBECONFIG", str(kubeconfig))
        patch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
        patch.setenv("HYBRID_INFERENCE_RESYNC_SECONDS", "2")  # drift repair within seconds
        args = ["run", "-m", "hybrid_operator", "--namespace", NS, "--standalone", "--verbose"]
        with KopfRunner(args, timeout=60) as runner:
            yield runner
    assert runner.exception is None, runner.output


def child(cluster: EmulatedCluster, collection: str, name: str) -> dict[str, Any] | None:
    result: dict[str, Any] | None = cluster.get(f"{collection}/{name}")
    return result


def status_of(cluster: EmulatedCluster, name: str) -> dict[str, Any]:
    body = cluster.get(f"{HINF}/{name}") or {}
    status: dict[str, Any] = body.get("status") or {}
    return status


def condition(status: dict[str, Any], ctype: str) -> dict[str, Any]:
    return next((c for c in status.get("conditions", []) if c["type"] == ctype), {})


def mark_available(cluster: EmulatedCluster, name: str) -> None:
    """What the Deployment controller would write once the pods pass their readiness probes."""
    ready = {"replicas": 1, "readyReplicas": 1, "availableReplicas": 1, "updatedReplicas": 1}
    cluster.patch(f"{DEPLOYMENTS}/{name}/status", {"status": ready})


def test_create_renders_children_on_the_selected_nodes(
    cluster: EmulatedCluster, operator: KopfRunner
) -> None:
    cluster.create(HINF, hybrid_inference("create", SPARK_PLUS_MAC))
    prefill = wait_for("create-prefill Deployment", lambda: child(cluster, DEPLOYMENTS, "create-prefill"))
    decode = wait_for("create-decode Deployment", lambda: child(cluster, DEPLOYMENTS, "create-decode"))
    prefill_pod, decode_pod = prefill["spec"]["template"]["spec"], decode["spec"]["template"]["spec"]
    assert prefill_pod["nodeSelector"] == {"hybridinference.dev/role": "prefill"}
    assert prefill_pod["containers"][0]["resources"]["limits"] == {"nvidia.com/gpu": 1}
    assert decode_pod["tolerations"][0]["key"] == "hybridinference.dev/mac"
    decode_env = {e["name"]: e["value"] for e in decode_pod["containers"][0]["env"]}
    assert decode_env["HYBRID_INFERENCE_PREFILL"] == "create-kv:50051"  # the headless Service
    assert prefill["metadata"]["ownerReferences"][0]["uid"] == "uid-create"
    assert wait_for("prefill Service", lambda: child(cluster, SERVICES, "create-prefill"))
    assert wait_for("api Service", lambda: child(cluster, SERVICES, "create-api"))
    policy = wait_for("NetworkPolicy", lambda: child(cluster, POLICIES, "create-prefill"))
    assert (
        policy["spec"]["ingress"][0]["from"][0]["podSelector"]["matchLabels"]["app.kubernetes.io/component"]
        == "decode"
    )
    status = wait_for("Pending status", lambda: status_of(cluster, "create"))
    assert status["phase"] == "Pending"


def test_kopf_keeps_its_state_under_our_prefix_and_adds_no_finalizer(
    cluster: EmulatedCluster, operator: KopfRunner
) -> None:
    cluster.create(HINF, hybrid_inference("settings", SPARK_PLUS_MAC))
    wait_for("settings-decode", lambda: child(cluster, DEPLOYMENTS, "settings-decode"))
    meta = wait_for(
        "kopf annotations",
        lambda: (
            (cluster.get(f"{HINF}/settings") or {}).get("metadata", {}).get("annotations")
            and cluster.get(f"{HINF}/settings")["metadata"]
        ),
    )
    assert "hybridinference.dev/last-handled-configuration" in meta["annotations"]
    assert not [key for key in meta["annotations"] if key.startswith("kopf.zalando.org/")]
    assert not meta.get("finalizers")  # children are garbage-collected through owner references


def test_available_deployments_make_it_ready_with_placement(
    cluster: EmulatedCluster, operator: KopfRunner
) -> None:
    cluster.create(HINF, hybrid_inference("ready", SPARK_PLUS_MAC))
    for role in ("prefill", "decode"):
        wait_for(f"ready-{role}", lambda role=role: child(cluster, DEPLOYMENTS, f"ready-{role}"))
        mark_available(cluster, f"ready-{role}")
    status = wait_for(
        "phase Ready",
        lambda: status_of(cluster, "ready").get("phase") == "Ready" and status_of(cluster, "ready"),
    )
    assert status["placement"]["prefillNode"] == "spark"
    assert status["placement"]["decodeNode"] == "mac"
    assert status["endpoints"]["api"] == f"http://ready-api.{NS}.svc:8000"
    assert condition(status, "Ready")["status"] == "True"
    assert condition(status, "InvalidSpec")["status"] == "False"
    assert status["observedGeneration"] == 1


def test_spec_edit_changes_children_and_observed_generation(
    cluster: EmulatedCluster, operator: KopfRunner
) -> None:
    cluster.create(HINF, hybrid_inference("edit", SPARK_PLUS_MAC))
    wait_for("edit-decode", lambda: child(cluster, DEPLOYMENTS, "edit-decode"))
    wait_for("first status", lambda: status_of(cluster, "edit").get("observedGeneration") == 1)
    # The API server bumps metadata.generation on every spec change; kmock does not, so we do.
    cluster.patch(
        f"{HINF}/edit",
        {
            "metadata": {"generation": 2},
            "spec": {"serving": {"maxConcurrency": 3}, "decode": {"replicas": 2}},
        },
    )

    def edited() -> bool:
        decode = child(cluster, DEPLOYMENTS, "edit-decode") or {}
        env = {e["name"]: e["value"] for e in decode["spec"]["template"]["spec"]["containers"][0]["env"]}
        return decode["spec"]["replicas"] == 2 and env.get("HYBRID_INFERENCE_MAX_CONCURRENCY") == "3"

    wait_for("decode Deployment with 2 replicas and max concurrency 3", edited)
    assert wait_for("observedGeneration 2", lambda: status_of(cluster, "edit").get("observedGeneration") == 2)


def test_deleted_child_deployment_comes_back(cluster: EmulatedCluster, operator: KopfRunner) -> None:
    cluster.create(HINF, hybrid_inference("drift", SPARK_PLUS_MAC))
    first = wait_for("drift-prefill", lambda: child(cluster, DEPLOYMENTS, "drift-prefill"))
    cluster.delete(f"{DEPLOYMENTS}/drift-prefill")
    assert child(cluster, DEPLOYMENTS, "drift-prefill") is None
    again = wait_for("drift-prefill recreated", lambda: child(cluster, DEPLOYMENTS, "drift-prefill"))
    assert again["spec"] == first["spec"]


def test_deleted_service_comes_back_on_the_next_resync(
    cluster: EmulatedCluster, operator: KopfRunner
) -> None:
    cluster.create(HINF, hybrid_inference("resync", SPARK_PLUS_MAC))
    wait_for("resync-api Service", lambda: child(cluster, SERVICES, "resync-api"))
    cluster.delete(f"{SERVICES}/resync-api")
    assert child(cluster, SERVICES, "resync-api") is None
    again = wait_for("resync-api recreated", lambda: child(cluster, SERVICES, "resync-api"))
    assert again["spec"]["selector"]["app.kubernetes.io/component"] == "decode"


def test_invalid_spec_sets_invalid_spec_and_creates_nothing(
    cluster: EmulatedCluster, operator: KopfRunner
) -> None:
    bad = {**SPARK_PLUS_MAC, "prefill": {"device": "cpu", "gpus": 1}}
    cluster.create(HINF, hybrid_inference("invalid", bad))
    status = wait_for(
        "Invalid phase",
        lambda: status_of(cluster, "invalid").get("phase") == "Invalid" and status_of(cluster, "invalid"),
    )
    invalid = condition(status, "InvalidSpec")
    assert invalid["status"] == "True"
    assert invalid["reason"] == "SchemaViolation"
    assert "gpus > 0 needs device cuda or auto" in invalid["message"]
    assert child(cluster, DEPLOYMENTS, "invalid-prefill") is None
    assert child(cluster, SERVICES, "invalid-api") is None


def test_selector_matching_no_node_is_reported_and_builds_nothing(
    cluster: EmulatedCluster, operator: KopfRunner
) -> None:
    spec = {
        **SPARK_PLUS_MAC,
        "decode": {"nodeSelector": {"hybridinference.dev/role": "mac-that-never-joined"}},
    }
    cluster.create(HINF, hybrid_inference("nowhere", spec))
    status = wait_for(
        "Invalid phase",
        lambda: status_of(cluster, "nowhere").get("phase") == "Invalid" and status_of(cluster, "nowhere"),
    )
    invalid = condition(status, "InvalidSpec")
    assert invalid["reason"] == "NoMatchingNode"
    assert "mac-that-never-joined" in invalid["message"]
    assert child(cluster, DEPLOYMENTS, "nowhere-prefill") is None


def test_the_child_watch_sends_its_label_selector_to_the_api_server(
    cluster: EmulatedCluster, operator: KopfRunner
) -> None:
    # kopf filters `labels=` of a handler in the operator; only settings.watching.label_selectors
    # reach the API server, so every Deployment in the namespace would otherwise be streamed.
    requests = wait_for(
        "the Deployment list and watch",
        lambda: [r for r in cluster.requests_to(DEPLOYMENTS) if r.method == "GET"],
    )
    selectors = {r.params.get("labelSelector") for r in requests}
    assert selectors == {
        "app.kubernetes.io/managed-by=hybrid-inference-operator,app.kubernetes.io/name=hybrid-inference"
    }
