"""placement.mode auto with the real kopf operator against kmock: the planner picks the nodes.

Each test has its own emulated cluster, because Nodes are cluster-wide: one with a GPU node, a Mac
node and an unlabelled board; one with only nodes whose speed is unknown.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from emulated_cluster import EmulatedCluster, wait_for
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
