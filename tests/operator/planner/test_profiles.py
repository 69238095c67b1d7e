"""Hardware and link profiles: every built-in has its sources; files round-trip; bad ones are refused."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hybrid_operator.planner import PlannerError, builtin_devices, builtin_links, device_profile, link_profile
from hybrid_operator.planner.hardware import device_from_dict
from hybrid_operator.planner.links import link_from_dict

REQUIRED_DEVICES = {
    "dgx-spark",
    "m3-ultra",
    "m4-max",
    "m2-ultra",
    "rtx-4090",
    "l4",
    "a100",
    "h100",
    "h200",
    "generic-cpu",
}
REQUIRED_LINKS = {"1gbe", "10gbe", "25gbe", "100gbe", "thunderbolt-4", "thunderbolt-5", "loopback"}


def test_the_required_devices_exist_with_a_source_and_sustained_below_peak() -> None:
    devices = builtin_devices()
    assert set(devices) >= REQUIRED_DEVICES
    for device in devices.values():
        assert len(device.source) > 40, device.id
        assert set(device.peak_tflops) >= {"float32", "bfloat16", "float16"}, device.id
        for dtype, peak in device.peak_tflops.items():
            assert 0 < device.sustained_tflops[dtype] < peak
        assert 0 < device.sustained_memory_gbps < device.memory_gbps


def test_the_required_links_exist_and_faster_lines_carry_more() -> None:
    links = builtin_links()
    assert set(links) >= REQUIRED_LINKS
    ethernet = [links[name].bytes_per_second for name in ("1gbe", "10gbe", "25gbe", "100gbe")]
    assert ethernet == sorted(ethernet) and len(set(ethernet)) == 4
    assert links["10gbe"].bytes_per_second == pytest.approx(10e9 / 8 * 0.94)


def test_a_measured_device_file_round_trips_and_keeps_its_measured_rates(tmp_path: Path) -> None:
    measured = device_from_dict(
        {
            "id": "this-box",
            "memory_gb": 16,
            "memory_gbps": 30,
            "peak_tflops": {"float32": 0.15},
            "sustained_tflops": {"float32": 0.148},
            "sustained_memory_gbps": 20,
            "measured": True,
            "layer_overhead_seconds": 0.0002,
        }
    )
    path = tmp_path / "this-box.json"
    path.write_text(json.dumps(measured.to_dict()))
    loaded = device_profile(str(path))
    assert loaded == measured
    assert loaded.flops_per_second("float32") == pytest.approx(0.148e12)
    with pytest.raises(
        PlannerError, match="'this-box' has no compute rate for dtype 'float16'; it has float32"
    ):
        loaded.flops_per_second("float16")


def test_a_measured_link_file_is_used_as_is(tmp_path: Path) -> None:
    path = tmp_path / "link.json"
    path.write_text(json.dumps({"id": "lab", "gbps": 8, "efficiency": 1, "latency_seconds": 0.001}))
    assert link_profile(str(path)).bytes_per_second == pytest.approx(1e9)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"id": "x", "memory_gb": 1, "memory_gbps": 1, "peak_tflops": {"fp16": 1}}, "unknown dtype 'fp16'"),
        ({"id": "x", "memory_gb": 1, "memory_gbps": "fast", "peak_tflops": {"float32": 1}}, "'fast' is not"),
        (
            {"id": "x", "memory_gb": 0, "memory_gbps": 1, "peak_tflops": {"float32": 1}},
            "memory_gb' = 0.0 must",
        ),
        ({"id": "x", "memory_gbps": 1, "peak_tflops": {"float32": 1}}, "missing field 'memory_gb'"),
        (
            {
                "id": "x",
                "memory_gb": 1,
                "memory_gbps": 1,
                "peak_tflops": {"float32": 1},
                "engine": "onnx/cpu",
            },
            "engine 'onnx' on device 'cpu': no profile; known: ",
        ),
        (
            {"id": "x", "memory_gb": 1, "memory_gbps": 1, "peak_tflops": {"float32": 1}, "engine": "vllm"},
            r"engine vllm has no profile for cpu \(cpu devices\); engines there: mlx, torch",
        ),
        (
            {
                "id": "x",
                "memory_gb": 1,
                "memory_gbps": 1,
                "peak_tflops": {"float32": 1},
                "sustained_tflops": {"float32": 1},
                "measured_with": "torch",
            },
            "measured_with 'torch' must be engine/device",
        ),
    ],
)
def test_bad_device_profiles_are_refused_naming_the_field(data: dict, message: str) -> None:
    with pytest.raises(PlannerError, match=message):
        device_from_dict(data)


def test_bad_link_profiles_are_refused_naming_the_field() -> None:
    with pytest.raises(PlannerError, match=r"efficiency 1\.5 must be at most 1"):
        link_from_dict({"id": "x", "gbps": 1, "efficiency": 1.5, "latency_seconds": 0})
    with pytest.raises(PlannerError, match="missing field 'latency_seconds'"):
        link_from_dict({"id": "x", "gbps": 1})


def test_unknown_ids_and_unreadable_files_are_named(tmp_path: Path) -> None:
    with pytest.raises(PlannerError, match=r"unknown device 'tpu-v5'.*dgx-spark"):
        device_profile("tpu-v5")
    with pytest.raises(PlannerError, match=r"unknown link '5gbe'.*10gbe"):
        link_profile("5gbe")
    with pytest.raises(PlannerError, match=r"cannot read profile file .*missing\.json"):
        device_profile(str(tmp_path / "missing.json"))
    broken = tmp_path / "broken.json"
    broken.write_text("{not json")
    with pytest.raises(PlannerError, match="is not valid JSON/YAML"):
        link_profile(str(broken))
