"""Engine profiles: each engine's efficiencies and overheads turn a device's peaks into the rates the
roofline uses; MLX vs torch MPS reproduce the public numbers they come from."""

from __future__ import annotations

import dataclasses

import pytest
from hybrid_operator.planner import PlannerError, Request, device_profile, model_shape
from hybrid_operator.planner.engines import engine_profile, engine_profiles, resolve_engine, with_engine
from hybrid_operator.planner.hardware import device_from_dict
from hybrid_operator.planner.roofline import (
    decode_step_seconds,
    matmul_flops_per_second,
    prefill_layer_seconds,
    prefill_seconds,
)
from hybrid_workers.enums import ComputeDevice, RuntimeEngine

# Apple M1 Max (32-core GPU): 400 GB/s, ~10.4 TFLOP/s (Apple MacBook Pro 2021 tech specs).
M1_MAX = {
    "id": "m1-max",
    "kind": "apple",
    "memory_gb": 64,
    "memory_gbps": 400,
    "peak_tflops": {"float16": 10.4},
}
MEASURED_CPU = {
    "id": "box",
    "kind": "cpu",
    "memory_gb": 16,
    "memory_gbps": 30,
    "peak_tflops": {"float32": 0.2},
    "sustained_tflops": {"float32": 0.1},
    "sustained_memory_gbps": 12,
    "decode_gbps": {"float32": 12},
    "kv_gbps": 6,
    "layer_overhead_seconds": 0.0004,
    "measured": True,
}


def tokens_per_second(engine: str) -> float:
    profile = device_from_dict(M1_MAX, engine)
    return 1 / decode_step_seconds(model_shape("llama-3.1-8b"), profile, "float16", context=128)


def test_llama_8b_fp16_on_an_m1_max_matches_the_public_reports() -> None:
    """torch MPS ~9 tok/s vs Metal-native ~19 tok/s (the numbers the MLX engine issue cites)."""
    assert 14 < tokens_per_second("mlx") < 24
    assert 6.5 < tokens_per_second("torch") < 11.5
    assert 1.8 < tokens_per_second("mlx") / tokens_per_second("torch") < 2.6  # reported: 19 / 9 = 2.1


def test_every_profile_uses_the_closed_names_fractions_and_cites_a_source() -> None:
    for (engine, device), profile in engine_profiles().items():
        assert RuntimeEngine(engine) is not RuntimeEngine.AUTO and ComputeDevice(device)
        for share in (profile.compute_efficiency, profile.attention_efficiency, profile.bandwidth_efficiency):
            assert 0 < share <= 1
        assert profile.step_overhead_seconds >= 0 and profile.layer_overhead_seconds >= 0
        assert len(profile.source) > 20, profile.key
    engines_on_cuda = {e for e, d in engine_profiles() if d == "cuda"}
    assert engines_on_cuda >= {"torch", "llama.cpp", "vllm", "sglang", "tensorrt-llm"}


def test_auto_is_torch_on_nvidia_and_cpus_and_mlx_on_apple_gpus() -> None:
    assert resolve_engine("auto", "gpu").key == "torch/cuda"
    assert resolve_engine("auto", "apple").key == "mlx/metal"
    assert resolve_engine("auto", "cpu").key == "torch/cpu"
    assert resolve_engine("torch", "apple").key == "torch/mps"
    assert resolve_engine("llama.cpp", "apple").key == "llama.cpp/metal"


def test_an_engine_sets_every_rate_from_the_device_peaks() -> None:
    base = device_profile("m3-ultra")
    mps = with_engine(base, "torch")
    torch_mps = engine_profile("torch", "mps")
    assert mps.engine == "torch/mps" and mps.id == base.id
    assert mps.sustained_memory_gbps == pytest.approx(819 * torch_mps.bandwidth_efficiency)
    assert mps.sustained_tflops["float16"] == pytest.approx(26 * torch_mps.compute_efficiency)
    assert mps.attention_tflops["float16"] == pytest.approx(26 * torch_mps.attention_efficiency)
    assert with_engine(mps, "mlx") == base  # from the peaks again, whatever was applied before


def test_a_measured_profile_keeps_its_rates_for_torch_and_scales_them_for_another_engine() -> None:
    box = device_from_dict(MEASURED_CPU)
    assert box.engine == box.measured_with == "torch/cpu"
    assert box.sustained_tflops == {"float32": 0.1} and box.decode_gbps == {"float32": 12}
    assert box.layer_overhead_seconds == 0.0004  # measured, not the engine's
    mlx = with_engine(box, "mlx")
    ratio = (
        engine_profile("mlx", "cpu").bandwidth_efficiency
        / engine_profile("torch", "cpu").bandwidth_efficiency
    )
    assert mlx.decode_gbps["float32"] == pytest.approx(12 * ratio)
    assert mlx.kv_gbps == pytest.approx(6 * ratio)
    back = with_engine(mlx, "torch")
    assert back.decode_gbps["float32"] == pytest.approx(12) and back.sustained_tflops[
        "float32"
    ] == pytest.approx(0.1)


def test_quantised_prefill_runs_at_the_precision_the_engine_multiplies_at() -> None:
    q4 = Request(512, 0, "float16", weights="q4_0")
    cuda = device_profile("rtx-4090", "llama.cpp")  # MMQ: int8 tensor cores
    llama_cuda = engine_profile("llama.cpp", "cuda")
    assert matmul_flops_per_second(cuda, q4) == pytest.approx(660.6e12 * llama_cuda.quantised_efficiency)
    metal = device_profile("m1-max", "llama.cpp")  # dequantised to half
    llama_metal = engine_profile("llama.cpp", "metal")
    assert matmul_flops_per_second(metal, q4) == pytest.approx(10.4e12 * llama_metal.quantised_efficiency)
    # F16 weights take the GEMM rate; a device without an int8 peak falls back to the model dtype's.
    assert matmul_flops_per_second(cuda, Request(512, 0, "float16")) == cuda.flops_per_second("float16")
    spark = device_profile("dgx-spark", "llama.cpp")
    assert matmul_flops_per_second(spark, q4) == pytest.approx(100e12 * llama_cuda.quantised_efficiency)


def test_attention_efficiency_slows_long_prompts_by_their_attention_flops_only() -> None:
    shape, base = model_shape("llama-3.1-8b"), device_profile("h100")
    rate = base.attention_flops_per_second("float16")
    assert rate < base.flops_per_second("float16")  # attention is not GEMM-efficient
    slow = dataclasses.replace(base, attention_tflops={"float16": rate / 2e12})
    for tokens in (512, 8192):
        request = Request(tokens, 0, "float16")
        extra = prefill_seconds(shape, slow, request) - prefill_seconds(shape, base, request)
        attention = shape.layers * shape.layer_attention_flops(tokens)
        assert extra == pytest.approx(attention / rate, rel=1e-6)  # twice as long: one more `rate`


def test_a_step_overhead_is_paid_once_per_decode_step_and_once_per_prefill() -> None:
    shape, base = model_shape("llama-3.1-8b"), device_profile("h100")
    slower = dataclasses.replace(base, step_overhead_seconds=0.004)
    assert decode_step_seconds(shape, slower, "float16", 100) - decode_step_seconds(
        shape, base, "float16", 100
    ) == pytest.approx(0.004)
    request = Request(2048, 0, "float16")
    assert prefill_seconds(shape, slower, request) - prefill_seconds(shape, base, request) == pytest.approx(
        0.004
    )


def test_a_measured_step_overhead_is_kept_like_the_layer_overhead() -> None:
    box = device_from_dict({**MEASURED_CPU, "step_overhead_seconds": 0.0003})
    assert box.step_overhead_seconds == 0.0003  # measured, not torch/cpu's 0.0002
    mlx = with_engine(box, "mlx")
    assert (mlx.step_overhead_seconds, mlx.layer_overhead_seconds) == (0.0003, 0.0004)
    assert with_engine(mlx, "torch").step_overhead_seconds == 0.0003
    assert device_from_dict(box.to_dict()).step_overhead_seconds == 0.0003
    assert device_from_dict(MEASURED_CPU).step_overhead_seconds == 0.0  # files from before the field


@pytest.mark.parametrize("field", ["step_overhead_seconds", "layer_overhead_seconds"])
def test_a_negative_or_non_numeric_overhead_is_refused_naming_the_field(field: str) -> None:
    with pytest.raises(PlannerError, match=rf"device profile 'box': field '{field}' = -0.001 must be >= 0"):
        device_from_dict({**MEASURED_CPU, field: -0.001})
    with pytest.raises(PlannerError, match=rf"field '{field}' = 'fast' is not a number"):
        device_from_dict({**MEASURED_CPU, field: "fast"})


def test_a_layer_narrower_than_the_engines_full_width_prefills_proportionally_slower() -> None:
    """torch/cpu reaches its compute share from 576-wide layers on; demo-tiny's 64-wide ones get 64/576
    of it (their linear work takes 9x as long), wider models and other engines are unchanged."""
    cpu = device_profile("generic-cpu")
    assert cpu.engine == "torch/cpu" and cpu.full_width == 576
    unlimited = dataclasses.replace(cpu, full_width=0)
    request = Request(418, 0, "float32")
    tiny = model_shape("demo-tiny")
    extra = prefill_layer_seconds(tiny, cpu, request) - prefill_layer_seconds(tiny, unlimited, request)
    linear = tiny.layer_linear_flops(418) / cpu.flops_per_second("float32")
    assert extra == pytest.approx((576 / 64 - 1) * linear)
    for wide in ("smollm2-135m-instruct", "demo-bench"):
        shape = model_shape(wide)
        assert prefill_layer_seconds(shape, cpu, request) == prefill_layer_seconds(shape, unlimited, request)
    assert {p.key for p in engine_profiles().values() if p.full_width} == {"torch/cpu"}
    assert device_from_dict(MEASURED_CPU).full_width == 0  # measured on the planned shape's own layers


def test_an_engine_without_a_profile_on_the_device_is_refused_naming_the_ones_there() -> None:
    with pytest.raises(
        PlannerError,
        match=r"engine mlx has no profile for cuda \(gpu devices\); engines there: llama.cpp, sglang",
    ):
        device_profile("h100", "mlx")
    with pytest.raises(PlannerError, match="engine 'mlx' on device 'cuda': no profile; known: "):
        engine_profile("mlx", "cuda")


def test_a_measured_attention_rate_is_used_and_scaled_for_another_engine() -> None:
    box = device_from_dict({**MEASURED_CPU, "attention_tflops": {"float32": 0.04}})
    assert box.attention_flops_per_second("float32") == pytest.approx(0.04e12)
    mlx = with_engine(box, "mlx")
    torch_cpu, mlx_cpu = engine_profile("torch", "cpu"), engine_profile("mlx", "cpu")
    ratio = mlx_cpu.attention_efficiency / torch_cpu.attention_efficiency
    assert mlx.attention_tflops["float32"] == pytest.approx(0.04 * ratio)
    assert with_engine(mlx, "torch").attention_tflops["float32"] == pytest.approx(0.04)


def test_a_profile_written_before_attention_was_measured_still_loads() -> None:
    """Files from earlier `calibrate` versions have no attention_tflops: attention runs at the GEMM rate
    times the engine's attention/GEMM ratio, as before."""
    box = device_from_dict(MEASURED_CPU)
    torch_cpu = engine_profile("torch", "cpu")
    expected = 0.1 * torch_cpu.attention_efficiency / torch_cpu.compute_efficiency
    assert box.attention_tflops["float32"] == pytest.approx(expected)
