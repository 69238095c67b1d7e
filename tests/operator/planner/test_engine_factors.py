"""Engine factors: MLX on Apple silicon vs torch MPS reproduce the public numbers they come from."""

from __future__ import annotations

import pytest
from hybrid_operator.planner import PlannerError, device_profile, model_shape
from hybrid_operator.planner.engines import engine_profile, engine_profiles, with_engine
from hybrid_operator.planner.hardware import device_from_dict
from hybrid_operator.planner.roofline import decode_step_seconds
from hybrid_workers.enums import ComputeDevice, Engine

# Apple M1 Max (32-core GPU): 400 GB/s, ~10.4 TFLOP/s (Apple MacBook Pro 2021 tech specs).
M1_MAX = {
    "id": "m1-max",
    "kind": "apple",
    "memory_gb": 64,
    "memory_gbps": 400,
    "peak_tflops": {"float16": 10.4},
}


def tokens_per_second(engine: str, device: str) -> float:
    profile = with_engine(device_from_dict(M1_MAX), engine, device)
    return 1 / decode_step_seconds(model_shape("llama-3.1-8b"), profile, "float16", context=128)


def test_llama_8b_fp16_on_an_m1_max_matches_the_public_reports() -> None:
    """torch MPS ~9 tok/s vs Metal-native ~19 tok/s (the numbers the MLX engine issue cites)."""
    assert 14 < tokens_per_second("mlx", "metal") < 24
    assert 6.5 < tokens_per_second("torch", "mps") < 11.5
    assert tokens_per_second("mlx", "metal") / tokens_per_second("torch", "mps") == pytest.approx(1 / 0.47)


def test_every_pair_uses_the_workers_names_and_cites_a_source() -> None:
    for (engine, device), profile in engine_profiles().items():
        assert Engine(engine) is not Engine.AUTO and ComputeDevice(device)
        assert 0 < profile.decode_factor <= 1 and len(profile.source) > 40


def test_an_engine_leaves_compute_alone_and_scales_decode_bandwidth() -> None:
    base = device_profile("m3-ultra")
    mps = with_engine(base, "torch", "mps")
    assert mps.sustained_tflops == base.sustained_tflops
    assert mps.sustained_memory_gbps == pytest.approx(base.sustained_memory_gbps * 0.47)
    assert with_engine(base, "mlx", "metal").sustained_memory_gbps == base.sustained_memory_gbps


def test_an_unknown_pair_is_refused_naming_the_known_ones() -> None:
    with pytest.raises(PlannerError, match="engine 'mlx' on device 'cuda': no profile; known: mlx/cpu"):
        engine_profile("mlx", "cuda")
