"""Failure modes of a real cluster, one reconcile pass at a time against kmock's emulator (no kopf):
one dtype for both roles, children the API server rejects, nodes going NotReady or cordoned, a
ServiceMonitor switched off. The emulator answers `dryRun=All` and 422s as an API server does."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from emulated_cluster import EmulatedCluster, hybrid_inference
from hybrid_operator.config import OperatorConfig
from hybrid_operator.kube import KubeClient
from hybrid_operator.reconcile import reconcile

pytestmark = pytest.mark.operator

NS = "failures"
HINF = f"/apis/hybridinference.dev/v1alpha1/namespaces/{NS}/hybridinferences"
DEPLOYMENTS = f"/apis/apps/v1/namespaces/{NS}/deployments"
SERVICES = f"/api/v1/namespaces/{NS}/services"
MONITORS = f"/apis/monitoring.coreos.com/v1/namespaces/{NS}/servicemonitors"
EVENTS = f"/api/v1/namespaces/{NS}/events"
READY = {"conditions": [{"type": "Ready", "status": "True"}]}
GPU = {
    "metadata": {"name": "gpu", "labels": {"role": "prefill"}},
    "status": {"allocatable": {"nvidia.com/gpu": "1"}, **READY},
}
# The API server's own words for an affinity typo the CRD lets through (preserve-unknown-fields).
AFFINITY_422 = (
    'Deployment.apps "rejected-decode" is invalid: spec.template.spec.affinity.nodeAffinity.'
    "requiredDuringSchedulingIgnoredDuringExecution.nodeSelectorTerms[0].matchExpressions[0].operator: "
    'Unsupported value: "Equals"'
)


def mac(name: str) -> dict[str, Any]:
    return {"metadata": {"name": name, "labels": {"role": name}}, "status": READY}


def spec(decode_node: str, **extra: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "model": {"source": "org/model", "volume": {"pvc": "models"}},  # dtype: auto (the default)
        "prefill": {"device": "cuda", "gpus": 1, "nodeSelector": {"role": "prefill"}},
        "decode": {"device": "cpu", "nodeSelector": {"role": decode_node}},
    }
    return {**base, **extra}


@pytest.fixture(scope="module")
def cluster() -> Iterator[EmulatedCluster]:
    emulated = EmulatedCluster(invalid={"rejected-decode": AFFINITY_422}).start()
    for node in (GPU, mac("mac-a"), mac("mac-b"), mac("mac-c"), mac("mac-d")):
        emulated.create("/api/v1/nodes", {"apiVersion": "v1", "kind": "Node", **node})
    yield emulated
    emulated.stop()


def create(cluster: EmulatedCluster, name: str, body_spec: dict[str, Any]) -> None:
    cluster.create(HINF, hybrid_inference(NS, name, body_spec))


def change_spec(cluster: EmulatedCluster, name: str, generation: int, body_spec: dict[str, Any]) -> None:
    """A spec edit as the API server stores it: kmock does not bump generation, so we do."""
    cluster.patch(f"{HINF}/{name}", {"metadata": {"generation": generation}, "spec": body_spec})


async def run(cluster: EmulatedCluster, kube: KubeClient, name: str, **kw: Any) -> dict[str, Any]:
    await reconcile(kube, cluster.get(f"{HINF}/{name}"), OperatorConfig(), **kw)
    status: dict[str, Any] = cluster.get(f"{HINF}/{name}")["status"]
    return status


def condition(status: dict[str, Any], ctype: str) -> dict[str, Any]:
    return next(c for c in status["conditions"] if c["type"] == ctype)


def env_of(deployment: dict[str, Any]) -> dict[str, str]:
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e.get("value", "") for e in container["env"]}


def events_about(cluster: EmulatedCluster, name: str) -> list[dict[str, Any]]:
    items = (cluster.get(EVENTS) or {}).get("items", [])
    return [e for e in items if e["involvedObject"]["name"] == name]


def children(cluster: EmulatedCluster, name: str) -> list[str]:
    found = []
    for collection in (DEPLOYMENTS, SERVICES):
        found += [
            item["metadata"]["name"]
            for item in (cluster.get(collection) or {}).get("items", [])
            if item["metadata"]["name"].startswith(f"{name}-")
        ]
    return found


def set_node(cluster: EmulatedCluster, name: str, body: dict[str, Any]) -> None:
    cluster.patch(f"/api/v1/nodes/{name}", body)


async def test_dtype_auto_is_resolved_once_into_both_pods(
    cluster: EmulatedCluster, client: KubeClient
) -> None:
    create(cluster, "dtype", spec("mac-a"))
    await run(cluster, client, "dtype")
    prefill, decode = (cluster.get(f"{DEPLOYMENTS}/dtype-{role}") for role in ("prefill", "decode"))
    # CUDA prefill + CPU decode: the workers' own `auto` would pick float16 and float32.
    assert env_of(prefill)["HYBRID_INFERENCE_DTYPE"] == env_of(decode)["HYBRID_INFERENCE_DTYPE"] == "bfloat16"


async def test_a_child_the_api_server_rejects_builds_nothing_and_says_why(
    cluster: EmulatedCluster, client: KubeClient
) -> None:
    create(cluster, "rejected", spec("mac-a"))
    status = await run(cluster, client, "rejected")
    assert status["phase"] == "Invalid"
    invalid = condition(status, "InvalidSpec")
    assert invalid["reason"] == "ChildRejected"
    assert 'Unsupported value: "Equals"' in invalid["message"]
    assert "Deployment rejected-decode" in invalid["message"]
    assert children(cluster, "rejected") == []  # the prefill Deployment does not hold the GPU
    warnings = [e for e in events_about(cluster, "rejected") if e["type"] == "Warning"]
    assert [e["reason"] for e in warnings] == ["ChildRejected"]
    assert "Equals" in warnings[0]["message"]


async def test_a_rejected_generation_is_not_resent_by_timer_passes_until_the_spec_changes(
    cluster: EmulatedCluster, client: KubeClient
) -> None:
    create(cluster, "rejected-again", spec("mac-a"))
    cluster.emulator.invalid["rejected-again-prefill"] = "spec.template.spec.containers[0].ports: Duplicate"  # type: ignore[union-attr]
    path = f"{DEPLOYMENTS}/rejected-again-prefill"
    await run(cluster, client, "rejected-again")
    sent = len([r for r in cluster.requests_to(path) if r.method in ("PATCH", "POST")])
    assert sent >= 1
    for _ in range(3):  # resync timer / child-event passes
        await run(cluster, client, "rejected-again", retry_rejected=False)
    assert len([r for r in cluster.requests_to(path) if r.method in ("PATCH", "POST")]) == sent
    del cluster.emulator.invalid["rejected-again-prefill"]  # type: ignore[union-attr]
    change_spec(cluster, "rejected-again", 2, {"serving": {"maxConcurrency": 4}})
    status = await run(cluster, client, "rejected-again", retry_rejected=False)
    assert status["phase"] == "Pending"
    assert cluster.get(path) is not None


@pytest.mark.parametrize(
    ("name", "change", "named"),
    [
        (
            "lots",
            {"decode": {"resources": {"limits": {"memory": "lots"}}}},
            "decode.resources.limits.memory: 'lots'",
        ),
        (
            "above",
            {"prefill": {"resources": {"requests": {"memory": "64Gi"}, "limits": {"memory": "32Gi"}}}},
            "requests.memory '64Gi' is above limits.memory '32Gi'",
        ),
        ("ports", {"metrics": {"port": 50051}}, "metrics.port 50051 is the prefill pods' gRPC KV port"),
        (
            "typo",
            {"decode": {"affinity": {"nodeAfinity": {}}}},
            "decode.affinity.nodeAfinity: unknown field",
        ),
    ],
)
async def test_what_the_api_server_would_reject_is_named_before_anything_is_created(
    cluster: EmulatedCluster, client: KubeClient, name: str, change: dict[str, Any], named: str
) -> None:
    base = spec("mac-a")
    merged = {key: {**base.get(key, {}), **value} for key, value in change.items()}
    create(cluster, name, {**base, **merged})
    status = await run(cluster, client, name)
    invalid = condition(status, "InvalidSpec")
    assert (status["phase"], invalid["reason"]) == ("Invalid", "InvalidChild")
    assert named in invalid["message"]
    assert children(cluster, name) == []
    assert [e["reason"] for e in events_about(cluster, name) if e["type"] == "Warning"] == ["InvalidChild"]


@pytest.mark.parametrize(
    ("node", "down", "why"),
    [
        ("mac-b", {"status": {"conditions": [{"type": "Ready", "status": "Unknown"}]}}, "mac-b is NotReady"),
        ("mac-c", {"spec": {"unschedulable": True}}, "mac-c is cordoned"),
    ],
)
async def test_an_unavailable_decode_node_degrades_and_reconciling_goes_on(
    cluster: EmulatedCluster, client: KubeClient, node: str, down: dict[str, Any], why: str
) -> None:
    name = f"held-{node}"
    create(cluster, name, spec(node))
    assert (await run(cluster, client, name))["phase"] == "Pending"
    set_node(cluster, node, down)
    status = await run(cluster, client, name)
    degraded = condition(status, "Degraded")
    assert status["phase"] == "Degraded"
    assert (degraded["status"], degraded["reason"]) == ("True", "NodeUnavailable")
    assert why in degraded["message"]
    assert condition(status, "InvalidSpec")["status"] == "False"
    assert status["placement"]["decodeNode"] == node
    # Spec changes and drift repair keep working while the node is away.
    change_spec(cluster, name, 2, {"decode": {"replicas": 2}})
    cluster.delete(f"{DEPLOYMENTS}/{name}-prefill")
    status = await run(cluster, client, name)
    assert cluster.get(f"{DEPLOYMENTS}/{name}-decode")["spec"]["replicas"] == 2
    assert cluster.get(f"{DEPLOYMENTS}/{name}-prefill") is not None
    assert status["observedGeneration"] == 2 and status["phase"] == "Degraded"


async def test_a_node_drained_and_deleted_keeps_the_last_placement(
    cluster: EmulatedCluster, client: KubeClient
) -> None:
    create(cluster, "drained", spec("mac-d"))
    await run(cluster, client, "drained")
    cluster.delete("/api/v1/nodes/mac-d")
    status = await run(cluster, client, "drained")
    assert status["phase"] == "Degraded"
    assert condition(status, "Degraded")["reason"] == "NodeUnavailable"
    assert cluster.get(f"{DEPLOYMENTS}/drained-decode") is not None


async def test_a_selector_matching_no_node_after_a_spec_change_is_still_invalid(
    cluster: EmulatedCluster, client: KubeClient
) -> None:
    create(cluster, "typo-node", spec("mac-a"))
    await run(cluster, client, "typo-node")
    change_spec(cluster, "typo-node", 2, {"decode": {"nodeSelector": {"role": "mac-aa"}}})
    status = await run(cluster, client, "typo-node")
    assert (status["phase"], condition(status, "InvalidSpec")["reason"]) == ("Invalid", "NoMatchingNode")


async def test_switching_the_service_monitor_off_deletes_it_but_never_a_strangers(
    cluster: EmulatedCluster, client: KubeClient
) -> None:
    create(cluster, "monitored", spec("mac-a", metrics={"serviceMonitor": True}))
    await run(cluster, client, "monitored")
    assert cluster.get(f"{MONITORS}/monitored") is not None
    stranger = {"apiVersion": "monitoring.coreos.com/v1", "kind": "ServiceMonitor"}
    cluster.create(MONITORS, {**stranger, "metadata": {"name": "unmonitored", "namespace": NS}, "spec": {}})
    change_spec(cluster, "monitored", 2, {"metrics": {"serviceMonitor": False}})
    await run(cluster, client, "monitored")
    assert cluster.get(f"{MONITORS}/monitored") is None
    applied = [e["message"] for e in events_about(cluster, "monitored") if e["reason"] == "Applied"]
    assert "deleted ServiceMonitor monitored" in applied[-1]
    create(cluster, "unmonitored", spec("mac-a"))  # same name as the stranger's ServiceMonitor
    await run(cluster, client, "unmonitored")
    assert cluster.get(f"{MONITORS}/unmonitored") is not None
