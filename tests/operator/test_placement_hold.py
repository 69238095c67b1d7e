"""placement.hold: the last good placement is kept (and reported) while its nodes are unavailable."""

from __future__ import annotations

from typing import Any

from hybrid_operator.models import HybridInferenceSpec
from hybrid_operator.placement import hold_placement, unavailable_nodes

READY = {"conditions": [{"type": "Ready", "status": "True"}]}
NOT_READY = {"conditions": [{"type": "Ready", "status": "False"}]}
SPARK = {
    "metadata": {
        "name": "spark",
        "labels": {"nvidia.com/gpu.product": "NVIDIA-GB10", "kubernetes.io/hostname": "spark-1"},
    },
    "status": {"allocatable": {"nvidia.com/gpu": "1"}, **READY},
}
MAC_LABELS = {"hybridinference.dev/device": "m3-ultra", "kubernetes.io/hostname": "mac-1"}
TAINT = {"key": "hybridinference.dev/mac", "value": "true", "effect": "NoSchedule"}


def mac(status: dict[str, Any], cordoned: bool = False) -> dict[str, Any]:
    spec: dict[str, Any] = {"taints": [TAINT], **({"unschedulable": True} if cordoned else {})}
    return {"metadata": {"name": "mac", "labels": MAC_LABELS}, "spec": spec, "status": status}


AUTO = HybridInferenceSpec.model_validate(
    {
        "model": {"source": "meta-llama/Llama-3.1-8B-Instruct", "dtype": "float16"},
        "prefill": {"device": "cuda", "gpus": 1},
        "decode": {
            "device": "cpu",
            "tolerations": [{"key": "hybridinference.dev/mac", "operator": "Exists"}],
        },
        "placement": {"mode": "auto"},
    }
)
BEFORE = {
    "phase": "Ready",
    "observedGeneration": 3,
    "placement": {"prefillNode": "spark", "decodeNode": "mac"},
}


def test_unavailable_nodes_names_not_ready_and_cordoned() -> None:
    nodes = [SPARK, mac(NOT_READY, cordoned=True)]
    assert unavailable_nodes(nodes) == {"mac": "NotReady and cordoned"}


def test_auto_placement_keeps_the_last_nodes_while_the_mac_is_not_ready() -> None:
    assert hold_placement(AUTO, [SPARK, mac(READY)], {}).degraded is None
    held = hold_placement(AUTO, [SPARK, mac(NOT_READY)], BEFORE, generation=3)
    assert not held.placement.problems
    assert held.placement.decode_selector == {"kubernetes.io/hostname": "mac-1"}
    assert held.placement.prefill_selector == {"kubernetes.io/hostname": "spark-1"}
    assert held.degraded is not None and "mac is NotReady" in held.degraded


def test_auto_placement_of_a_deleted_node_is_kept_only_until_the_spec_changes() -> None:
    held = hold_placement(AUTO, [SPARK], BEFORE, generation=3)
    assert not held.placement.problems and held.placement.decode_nodes == ("mac",)
    assert held.degraded is not None and "mac is deleted" in held.degraded
    replanned = hold_placement(AUTO, [SPARK], BEFORE, generation=4)  # a new spec: plan again
    assert replanned.degraded is None and replanned.placement.decode_nodes == ("spark",)
