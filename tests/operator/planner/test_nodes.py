"""Node facts -> device profile: annotation, label, GPU product; unknown nodes say why."""

from __future__ import annotations

import json

import pytest
from hybrid_operator.planner import device_profile
from hybrid_operator.planner.nodes import NodeInfo, profile_node

GPU_PRODUCTS = {
    "NVIDIA-H100-80GB-HBM3": "h100",
    "NVIDIA-H200": "h200",
    "NVIDIA-A100-SXM4-80GB": "a100",
    "NVIDIA-GeForce-RTX-4090": "rtx-4090",
    "NVIDIA-L4": "l4",
    "NVIDIA-GB10": "dgx-spark",
    "NVIDIA-A100-SXM4-40GB": "a100-40gb",
    "NVIDIA-A100-PCIE-40GB": "a100-pcie-40gb",
    "NVIDIA-A100-80GB-PCIe": "a100-pcie-80gb",
    "NVIDIA-H100-PCIe": "h100-pcie",
    "NVIDIA-H100-NVL": "h100-nvl",
}


@pytest.mark.parametrize(("product", "expected"), sorted(GPU_PRODUCTS.items()))
def test_gpu_feature_discovery_products_map_to_profiles(product: str, expected: str) -> None:
    node = NodeInfo(
        "gpu-1", labels={"nvidia.com/gpu.product": product, "kubernetes.io/arch": "amd64"}, gpus=1
    )
    result = profile_node(node)
    assert result.device is not None and result.device.id == expected
    assert product in result.reason


@pytest.mark.parametrize(
    "product",
    ["NVIDIA-L40S", "NVIDIA-GH200-480GB", "Tesla-T4", "NVIDIA-A100", "NVIDIA-H200-NVL", "NVIDIA-H100"],
)
def test_gpus_without_a_profile_are_unknown_not_a_near_match(product: str) -> None:
    result = profile_node(NodeInfo("gpu-2", labels={"nvidia.com/gpu.product": product}, gpus=1))
    assert result.device is None
    assert f"GPU {product} has no profile" in result.reason


def test_a_gpu_count_without_a_product_label_is_unknown() -> None:
    result = profile_node(NodeInfo("gpu-3", gpus=2))
    assert result.device is None and "no nvidia.com/gpu.product label" in result.reason


def test_a_product_label_without_allocatable_gpus_does_not_count_as_a_gpu() -> None:
    result = profile_node(NodeInfo("drained", labels={"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"}))
    assert result.device is None and "without a GPU" in result.reason


def test_an_arm64_node_needs_a_device_label() -> None:
    bare = profile_node(NodeInfo("mac-1", labels={"kubernetes.io/arch": "arm64"}))
    assert bare.device is None and bare.reason.startswith("arm64 node without a GPU")
    labelled = profile_node(
        NodeInfo("mac-1", labels={"kubernetes.io/arch": "arm64", "hybridinference.dev/device": "m3-ultra"})
    )
    assert labelled.device == device_profile("m3-ultra")


def test_an_unknown_device_label_lists_the_known_ids() -> None:
    result = profile_node(NodeInfo("mac-2", labels={"hybridinference.dev/device": "m5-ultra"}))
    assert result.device is None and "m5-ultra names no profile (known: a100" in result.reason


def test_a_calibrated_annotation_wins_over_label_and_gpu() -> None:
    profile = {
        "id": "lab-box",
        "memory_gb": 64,
        "memory_gbps": 90,
        "peak_tflops": {"float16": 40},
        "sustained_tflops": {"float16": 30},
        "sustained_memory_gbps": 70,
        "measured": True,
    }
    node = NodeInfo(
        "box",
        labels={"hybridinference.dev/device": "h100", "nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"},
        annotations={"hybridinference.dev/profile": json.dumps(profile)},
        gpus=1,
    )
    result = profile_node(node)
    assert result.device is not None and result.device.id == "lab-box" and result.device.measured


def test_a_broken_annotation_excludes_the_node_with_the_parse_error() -> None:
    node = NodeInfo("box", annotations={"hybridinference.dev/profile": '{"id": "x", "memory_gb": 1}'})
    result = profile_node(node)
    assert result.device is None and "field 'peak_tflops' must map dtypes" in result.reason


def test_unschedulable_nodes_are_excluded_even_with_a_profile() -> None:
    node = NodeInfo("spark", labels={"hybridinference.dev/device": "dgx-spark"}, schedulable=False)
    assert profile_node(node).reason == "not schedulable (NotReady or cordoned)"


def test_a_reported_engine_sets_the_rates_and_is_named_in_the_evidence() -> None:
    labels = {"hybridinference.dev/device": "m3-ultra"}
    mlx = profile_node(NodeInfo("mac", labels=labels))
    mps = profile_node(
        NodeInfo("mac", labels=labels, annotations={"hybridinference.dev/engine": "torch/mps"})
    )
    assert mlx.device is not None and mps.device is not None
    assert (mlx.device.engine, mps.device.engine) == ("mlx/metal", "torch/mps")
    assert mps.device.sustained_memory_gbps < 0.5 * mlx.device.sustained_memory_gbps
    assert mps.reason == "label hybridinference.dev/device=m3-ultra, engine torch/mps"


def test_an_engine_pair_the_profile_cannot_run_is_planned_on_the_profiles_own_device_saying_so() -> None:
    mac = NodeInfo(
        "agent:mac",
        labels={"hybridinference.dev/device": "m3-ultra"},
        annotations={"hybridinference.dev/engine": "torch/cpu"},  # torch on the Mac's CPU
    )
    result = profile_node(mac)
    assert result.device is not None and result.device.engine == "torch/mps"
    assert result.reason == (
        "label hybridinference.dev/device=m3-ultra, engine torch/mps (reported torch/cpu: "
        "m3-ultra computes on metal, mps (apple device); it cannot run torch/cpu)"
    )
    gpu = NodeInfo(
        "gpu-1",
        labels={"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"},
        annotations={"hybridinference.dev/engine": "mlx/metal"},
        gpus=1,
    )
    planned = profile_node(gpu)
    assert planned.device is not None and planned.device.engine == "torch/cuda"  # mlx has no cuda profile
    assert "reported mlx/metal: h100 computes on cuda (gpu device); it cannot run mlx/metal" in planned.reason
