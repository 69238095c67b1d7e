"""placement.mode auto with the real kopf operator against kmock: the planner picks the nodes.

Each test has its own emulated cluster, because Nodes are cluster-wide: one with a GPU node, a Mac
node and an unlabelled board; one with only nodes whose speed is unknown; two with decode agents.
"""

from __future__ import annotations

import datetime
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from emulated_cluster import EmulatedCluster, wait_for
from hybrid_operator.agent_contract import micro_time
from kopf.testing import KopfRunner

pytestmark = [pytest.mark.operator, pytest.mark.slow]

NS = "inference"
HINF = f"/apis/hybridinference.dev/v1alpha1/namespaces/{NS}/hybridinferences"
DEPLOYMENTS = f"/apis/apps/v1/namespaces/{NS}/deployments"
READY = {"conditions": [{"type": "Ready", "status": "True"}]}
SPARK_LABELS = {
    "nvidia.com/gpu.product": "NVIDIA-GB10",
    "kubernetes.io/arch": "arm64",
    "kubernetes.io/hostname": "spark",
}
MAC_LABELS = {
    "kubernetes.io/arch": "arm64",
    "hybridinference.dev/device": "m3-ultra",
    "kubernetes.io/hostname": "mac",
}
SPARK = {
    "metadata": {"name": "spark", "labels": SPARK_LABELS},
    "status": {"allocatable": {"nvidia.com/gpu": "1"}, "capacity": {"nvidia.com/gpu": "1"}, **READY},
}
MAC = {
    "metadata": {"name": "mac", "labels": MAC_LABELS},
    "spec": {"taints": [{"key": "hybridinference.dev/mac", "value": "true", "effect": "NoSchedule"}]},
    "status": READY,
}
BOARD = {"metadata": {"name": "board", "labels": {"kubernetes.io/arch": "arm64"}}, "status": READY}
MYSTERY_GPU = {
    "metadata": {"name": "mystery", "labels": {"kubernetes.io/arch": "amd64"}},
    "status": {"allocatable": {"nvidia.com/gpu": "2"}, **READY},
}
AUTO_SPEC = {
    "model": {"source": "meta-llama/Llama-3.1-8B-Instruct", "dtype": "float16", "volume": {"pvc": "models"}},
    "prefill": {"device": "cuda", "gpus": 1},
    "decode": {
        "device": "cpu",
        "tolerations": [{"key": "hybridinference.dev/mac", "operator": "Exists", "effect": "NoSchedule"}],
    },
    "placement": {"mode": "auto"},
}


@pytest.fixture
def run_operator(tmp_path: Path) -> Iterator[Any]:
    """Start an emulator holding `nodes` and the operator watching it; stopped after the test."""
    started: list[tuple[EmulatedCluster, Any]] = []

    def start(*nodes: dict[str, Any]) -> EmulatedCluster:
        cluster = EmulatedCluster().start()
        for node in nodes:
            cluster.create("/api/v1/nodes", {"apiVersion": "v1", "kind": "Node", **node})
        patch = pytest.MonkeyPatch()
        patch.setenv("KUBECONFIG", str(cluster.write_kubeconfig(tmp_path / "config", NS)))
        patch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
        runner = KopfRunner(["run", "-m", "hybrid_operator", "--namespace", NS, "--standalone"], timeout=60)
        runner.__enter__()
        started.append((cluster, (runner, patch)))
        return cluster

    yield start
    for cluster, (runner, patch) in started:
        runner.__exit__(None, None, None)
        patch.undo()
        cluster.stop()
        assert runner.exception is None, runner.output


def create(cluster: EmulatedCluster, name: str) -> None:
    metadata = {"name": name, "namespace": NS, "uid": f"uid-{name}", "generation": 1, "resourceVersion": "1"}
    body = {"apiVersion": "hybridinference.dev/v1alpha1", "kind": "HybridInference", "metadata": metadata}
    cluster.create(HINF, {**body, "spec": AUTO_SPEC})


def status_of(cluster: EmulatedCluster, name: str) -> dict[str, Any]:
    status: dict[str, Any] = (cluster.get(f"{HINF}/{name}") or {}).get("status") or {}
    return status


def test_gpu_node_prefills_mac_node_decodes_and_status_has_the_prediction(run_operator: Any) -> None:
    cluster = run_operator(SPARK, MAC, BOARD)
    create(cluster, "auto")
    prefill = wait_for("auto-prefill", lambda: cluster.get(f"{DEPLOYMENTS}/auto-prefill"))
    decode = wait_for("auto-decode", lambda: cluster.get(f"{DEPLOYMENTS}/auto-decode"))
    assert prefill["spec"]["template"]["spec"]["nodeSelector"] == {"kubernetes.io/hostname": "spark"}
    assert decode["spec"]["template"]["spec"]["nodeSelector"] == {"kubernetes.io/hostname": "mac"}
    status = wait_for("status with a prediction", lambda: status_of(cluster, "auto").get("prediction") and
                      status_of(cluster, "auto"))  # fmt: skip
    placement, prediction = status["placement"], status["prediction"]
    assert (placement["prefillNode"], placement["decodeNode"]) == ("spark", "mac")
    assert placement["reason"].startswith("auto: prefill on spark (dgx-spark")
    assert "board: arm64 node without a GPU" in placement["reason"]
    assert prediction["speedupVsBestSingleNode"] > 1.0
    env = {e["name"]: e["value"] for e in decode["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert float(env["HYBRID_INFERENCE_PREDICTED_TTFT_SECONDS"]) == pytest.approx(
        prediction["ttftSeconds"], rel=1e-3
    )
    assert env["HYBRID_INFERENCE_REMOTE_PREFILL_MIN_TOKENS"] == str(prediction["remotePrefillMinTokens"])


def test_only_unknown_nodes_give_an_invalid_spec_condition_naming_each(run_operator: Any) -> None:
    cluster = run_operator(BOARD, MYSTERY_GPU)
    create(cluster, "unknown")
    status = wait_for("Invalid phase", lambda: status_of(cluster, "unknown").get("phase") == "Invalid" and
                      status_of(cluster, "unknown"))  # fmt: skip
    invalid = next(c for c in status["conditions"] if c["type"] == "InvalidSpec")
    assert invalid["status"] == "True"
    assert "placement.mode auto: no node with a known device profile" in invalid["message"]
    assert "board: arm64 node without a GPU" in invalid["message"]
    assert "mystery: 2 nvidia.com/gpu but no nvidia.com/gpu.product label" in invalid["message"]
    assert cluster.get(f"{DEPLOYMENTS}/unknown-prefill") is None


# Auto placement across Nodes and decode agents. The test plays the agents' heartbeat (each Lease as
# `hybrid-inference agent` writes it; test_agent_kmock.py runs a real agent) and the API server's
# NodePort allocator, which the emulator lacks.
LEASES = f"/apis/coordination.k8s.io/v1/namespaces/{NS}/leases"
CONFIGMAPS = f"/api/v1/namespaces/{NS}/configmaps"
SERVICES = f"/api/v1/namespaces/{NS}/services"
SPARK_WITH_IP = {
    **SPARK,
    "status": {**SPARK["status"], "addresses": [{"type": "InternalIP", "address": "10.0.0.5"}]},
}
LONG_AGO = datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC)  # a Lease nobody renews any more
MTLS = {"tls": {"enabled": True, "secretName": "kv-tls", "mutual": True}}


def agent_lease(name: str, renewed: datetime.datetime, **announced: str) -> dict[str, Any]:
    annotations = {"address": "192.0.2.7", "engine": "mlx", "device": "metal", "state": "running"}
    annotations |= {"agent-version": "0.1.0", "free-memory-bytes": str(400 * 10**9), **announced}
    meta = {
        "name": name,
        "namespace": NS,
        "labels": {"hybridinference.dev/agent": name},
        "annotations": {f"hybridinference.dev/{key}": value for key, value in annotations.items()},
    }
    spec = {"holderIdentity": name, "leaseDurationSeconds": 3600, "renewTime": micro_time(renewed)}
    return {"apiVersion": "coordination.k8s.io/v1", "kind": "Lease", "metadata": meta, "spec": spec}


def with_agents(cluster: EmulatedCluster, *leases: dict[str, Any]) -> None:
    secret = {"tls.crt": "eA==", "tls.key": "eA==", "ca.crt": "eA=="}  # the operator checks keys only
    body = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "kv-tls"}, "data": secret}
    cluster.create(f"/api/v1/namespaces/{NS}/secrets", body)
    for lease in leases:
        cluster.create(LEASES, lease)


def create_spec(cluster: EmulatedCluster, name: str, spec: dict[str, Any]) -> None:
    metadata = {"name": name, "namespace": NS, "uid": f"uid-{name}", "generation": 1, "resourceVersion": "1"}
    body = {"apiVersion": "hybridinference.dev/v1alpha1", "kind": "HybridInference", "metadata": metadata}
    cluster.create(HINF, {**body, "spec": spec})


def test_a_live_agent_faster_than_every_node_takes_decode_and_an_expired_faster_one_is_ignored(
    run_operator: Any,
) -> None:
    cluster = run_operator(SPARK_WITH_IP, BOARD)
    now = datetime.datetime.now(datetime.UTC)
    studio = agent_lease("studio", now, **{"device-profile": "m4-max", "tls-dir": "/Users/ai/tls"})
    gone = agent_lease("gone", LONG_AGO, **{"device-profile": "m3-ultra"})
    with_agents(cluster, studio, gone)
    create_spec(cluster, "chat", {**AUTO_SPEC, "kvTransfer": MTLS})

    status = wait_for("decode placed on the agent", lambda: (s := status_of(cluster, "chat")).get(
        "placement", {}).get("decodeNode") == "agent:studio" and s)  # fmt: skip
    placement = status["placement"]
    assert placement["prefillNode"] == "spark"
    assert (
        "decode on agent:studio (m4-max, from agent device profile m4-max, engine mlx/metal"
        in (placement["reason"])
    )
    assert "agent:gone: Lease last renewed" in placement["reason"]  # faster, but silent for long
    assert "board: arm64 node without a GPU" in placement["reason"]
    assert status["prediction"]["decodeTokensPerSecond"] > 0
    assert status["agent"]["name"] == "studio"
    assert cluster.get(f"{DEPLOYMENTS}/chat-decode") is None  # no decode pods: the agent decodes

    # The API server allocates the prefill NodePort; then the agent's assignment is written, as for a
    # named agent, with the TLS folder the agent announced.
    service = wait_for("NodePort prefill Service", lambda: (s := cluster.get(f"{SERVICES}/chat-prefill")) and
                       s["spec"].get("type") == "NodePort" and s)  # fmt: skip
    ports = [{**port, "nodePort": 30000 + i} for i, port in enumerate(service["spec"]["ports"])]
    cluster.patch(f"{SERVICES}/chat-prefill", {"spec": {"ports": ports}})
    assigned = wait_for("assignment", lambda: cluster.get(f"{CONFIGMAPS}/chat-agent"))
    assert assigned["metadata"]["labels"]["hybridinference.dev/agent"] == "studio"
    flags = json.loads(assigned["data"]["flags.json"])
    node_ports = {port["name"]: port["nodePort"] for port in ports}
    assert flags["--prefill"] == f"10.0.0.5:{node_ports['grpc']}"
    assert flags["--prefill-data-port"] == node_ports["kv-data"]  # the data connection's NodePort
    assert flags["--tls-ca"] == "/Users/ai/tls/ca.crt"
    assert float(flags["--predicted-decode-tokens-per-second"]) == pytest.approx(
        status["prediction"]["decodeTokensPerSecond"], rel=1e-3
    )


def test_when_no_node_or_agent_fits_the_invalid_spec_names_each_candidate(run_operator: Any) -> None:
    cluster = run_operator(SPARK_WITH_IP, BOARD)
    now = datetime.datetime.now(datetime.UTC)
    small = agent_lease("mini", now, **{"device-profile": "m1-max"})
    gone = agent_lease("lost", LONG_AGO, **{"device-profile": "m3-ultra"})
    with_agents(cluster, small, gone)
    big = {"source": "meta-llama/Llama-3.1-70B-Instruct", "dtype": "float16", "volume": {"pvc": "models"}}
    create_spec(cluster, "huge", {**AUTO_SPEC, "model": big, "kvTransfer": MTLS})
    status = wait_for(
        "Invalid phase", lambda: (s := status_of(cluster, "huge")).get("phase") == "Invalid" and s
    )
    invalid = next(c for c in status["conditions"] if c["type"] == "InvalidSpec")
    assert invalid["reason"] == "NoMatchingNode"
    assert invalid["message"].startswith("placement.mode auto: no Node or agent can serve:")
    named = ("spark: nvidia.com/gpu.product", "board: arm64", "agent:mini: agent device profile m1-max")
    for candidate in (*named, "agent:lost: Lease last renewed"):
        assert candidate in invalid["message"]
    assert (
        cluster.get(f"{DEPLOYMENTS}/huge-prefill") is None and cluster.get(f"{CONFIGMAPS}/huge-agent") is None
    )
