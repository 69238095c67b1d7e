"""Quantised weight formats, GPU variants, the memory reserve and the context check in plans."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hybrid_operator.planner import (
    PlannerError,
    Request,
    device_profile,
    link_profile,
    make_plan,
    model_shape,
)
from hybrid_operator.planner.roofline import decode_seconds, prefill_seconds
from hybrid_operator.planner.weight_formats import FORMATS


def test_a_70b_model_fits_a_dgx_spark_in_fp8_but_not_in_float16() -> None:
    shape, spark = model_shape("llama-3.1-70b"), device_profile("dgx-spark")
    link = link_profile("10gbe")
    with pytest.raises(PlannerError, match="fits on none"):
        make_plan(shape, [spark], link, Request(2048, 32, "float16"))
    plan = make_plan(shape, [spark], link, Request(2048, 32, "float16", weights="fp8"))
    assert plan.best.fits


@pytest.mark.parametrize(
    ("weights", "bits"), [("q8_0", 8.5), ("q4_0", 4.5), ("mlx-4bit", 4.5), ("nvfp4", 4.5)]
)
def test_decode_time_scales_with_bits_per_weight(weights: str, bits: float) -> None:
    shape = model_shape("llama-3.1-8b")
    mac = replace(device_profile("m3-ultra"), layer_overhead_seconds=0.0)  # the weight reads alone
    f16 = decode_seconds(shape, mac, Request(1, 32, "float16"))
    quantised = decode_seconds(shape, mac, Request(1, 32, "float16", weights=weights))
    # One-token context and no fixed cost: the step is all weight reads, so the ratio is the bits ratio.
    assert quantised / f16 == pytest.approx(bits / 16, rel=0.01)


def test_fp8_weights_prefill_on_fp8_tensor_cores_where_the_device_has_them() -> None:
    shape = model_shape("llama-3.1-8b")
    h100, mac = device_profile("h100"), device_profile("m3-ultra")
    request_f16, request_fp8 = Request(8192, 0, "float16"), Request(8192, 0, "float16", weights="fp8")
    # The projections run twice as fast; attention stays at the f16 rate.
    assert prefill_seconds(shape, h100, request_fp8) < 0.7 * prefill_seconds(shape, h100, request_f16)
    # No fp8 rate on Apple GPUs: the dtype's rate, the same compute-bound time.
    assert prefill_seconds(shape, mac, request_fp8) == pytest.approx(
        prefill_seconds(shape, mac, request_f16), rel=1e-3
    )


def test_unknown_weight_format_names_the_known_ones() -> None:
    with pytest.raises(PlannerError, match=r"unknown weight format .q3_z.*q4_0"):
        Request(1, 1, "float16", weights="q3_z")
    assert set(FORMATS) >= {"q8_0", "q4_0", "q4_k_m", "fp8", "nvfp4", "mlx-4bit", "mlx-8bit"}


def test_a100_40gb_does_not_get_the_80gb_figures() -> None:
    big, small = device_profile("a100"), device_profile("a100-40gb")
    assert (big.memory_gb, big.memory_gbps) == (80, 2039)
    assert (small.memory_gb, small.memory_gbps) == (40, 1555)
    pcie = device_profile("h100-pcie")
    assert pcie.memory_gbps < device_profile("h100").memory_gbps


def test_the_fit_check_holds_back_a_reserve() -> None:
    # Llama-3.1-8B float16 is 16.1 GB: it would fit in 100% of 17 GB but not in 90% of it.
    shape = model_shape("llama-3.1-8b")
    box = device_profile("rtx-4090").to_dict() | {"id": "box", "memory_gb": 17}
    from hybrid_operator.planner.hardware import device_from_dict

    device = device_from_dict(box)
    with pytest.raises(PlannerError, match=r"15\.3 GB usable"):
        make_plan(shape, [device], link_profile("10gbe"), Request(16, 1, "float16"))


def test_a_prompt_beyond_the_context_is_refused() -> None:
    shape = model_shape("demo-tiny")
    with pytest.raises(PlannerError, match="exceed the model's context of 512"):
        make_plan(
            shape, [device_profile("generic-cpu")], link_profile("loopback"), Request(500, 20, "float32")
        )
