"""Effective rates from timed decoder layers: plan's own formulas give the measured times back."""

from __future__ import annotations

import pytest
from hybrid_operator.planner import Request, model_shape
from hybrid_operator.planner.hardware import DeviceProfile, device_from_dict
from hybrid_operator.planner.roofline import decode_step_seconds, prefill_layer_seconds
from hybrid_workers.calibrated_rates import (
    MIN_SHARE,
    LayerTimes,
    bounded_overhead,
    decode_bytes_per_second,
    kv_bytes_per_second,
    prefill_flops_per_second,
)

# What calibrate could have measured for the bench model at 446 tokens (made-up, plausible numbers).
TIMES = LayerTimes(
    rows=446,
    prefill_seconds=0.072,
    decode_seconds=0.0035,
    attention_flops_per_second=40e9,
    head_bytes_per_second=14e9,
    layer_overhead_seconds=0.0005,
    kv_bytes_per_second=6e9,
)


def _profile(shape_name: str, times: LayerTimes) -> DeviceProfile:
    shape = model_shape(shape_name)
    return device_from_dict(
        {
            "id": "box",
            "kind": "cpu",
            "memory_gb": 16,
            "memory_gbps": 30,
            "peak_tflops": {"float32": 1.0},
            "sustained_tflops": {"float32": prefill_flops_per_second(shape, times) / 1e12},
            "attention_tflops": {"float32": times.attention_flops_per_second / 1e12},
            "sustained_memory_gbps": 20,
            "decode_gbps": {"float32": decode_bytes_per_second(shape, "float32", times) / 1e9},
            "kv_gbps": times.kv_bytes_per_second / 1e9,
            "layer_overhead_seconds": times.layer_overhead_seconds,
            "measured": True,
        }
    )


@pytest.mark.parametrize("shape_name", ["demo-bench", "smollm2-135m-instruct", "llama-3.1-8b"])
def test_the_prefill_rate_reproduces_the_measured_layer_time_through_plans_formula(shape_name: str) -> None:
    shape, box = model_shape(shape_name), _profile(shape_name, TIMES)
    planned = prefill_layer_seconds(shape, box, Request(TIMES.rows, 1, "float32"))
    assert planned == pytest.approx(TIMES.prefill_seconds, rel=1e-9)


@pytest.mark.parametrize("shape_name", ["demo-bench", "smollm2-135m-instruct"])
def test_the_decode_rate_reproduces_the_measured_layers_plus_the_lm_head(shape_name: str) -> None:
    shape, box = model_shape(shape_name), _profile(shape_name, TIMES)
    step = decode_step_seconds(shape, box, "float32", context=TIMES.rows)
    head_bytes = (shape.hidden + shape.embedding_params) * 4  # final norm + lm_head (tied: the embedding)
    assert step == pytest.approx(
        shape.layers * TIMES.decode_seconds + head_bytes / TIMES.head_bytes_per_second, rel=1e-9
    )


def test_attention_keeps_its_own_rate_so_longer_prompts_cost_more_per_token() -> None:
    """Away from the calibrated length the linear part scales with the prompt, attention with its square."""
    shape, box = model_shape("demo-bench"), _profile("demo-bench", TIMES)
    linear = shape.layer_linear_flops(4 * TIMES.rows) / box.flops_per_second("float32")
    attention = shape.layer_attention_flops(4 * TIMES.rows) / TIMES.attention_flops_per_second
    planned = prefill_layer_seconds(shape, box, Request(4 * TIMES.rows, 1, "float32"))
    assert planned == pytest.approx(linear + attention + TIMES.layer_overhead_seconds, rel=1e-9)
    assert planned > 4 * TIMES.prefill_seconds


def test_inconsistent_parts_floor_the_remainder_instead_of_going_negative() -> None:
    """An overhead measured under heavier load than the layer must not give a negative or infinite rate."""
    times = LayerTimes(446, 0.001, 0.0004, 40e9, 14e9, layer_overhead_seconds=0.002, kv_bytes_per_second=6e9)
    shape = model_shape("demo-bench")
    rate = prefill_flops_per_second(shape, times)
    assert rate == pytest.approx(shape.layer_linear_flops(446) / (MIN_SHARE * 0.001))
    assert 0 < decode_bytes_per_second(shape, "float32", times) < float("inf")


def test_decode_steps_at_two_contexts_give_a_kv_rate_that_reproduces_both() -> None:
    """B from the short context and B_kv from the slope: plan's decode step is affine in the context,
    so it passes through both measured steps."""
    shape = model_shape("demo-bench")
    long_seconds = 0.0052  # one layer's step with 4 x 446 cached tokens
    kv = kv_bytes_per_second(shape, "float32", (446, TIMES.decode_seconds), (4 * 446, long_seconds))
    assert kv == pytest.approx(3 * 446 * 2048 / (long_seconds - TIMES.decode_seconds))  # 2 KiB per token
    times = LayerTimes(**{**TIMES.__dict__, "kv_bytes_per_second": kv})
    box = _profile("demo-bench", times)
    head = (shape.hidden + shape.embedding_params) * 4 / TIMES.head_bytes_per_second
    for context, seconds in ((446, TIMES.decode_seconds), (4 * 446, long_seconds)):
        step = decode_step_seconds(shape, box, "float32", context=context)
        assert step == pytest.approx(shape.layers * seconds + head, rel=1e-9)


def test_a_longer_cache_measured_no_slower_gives_no_kv_rate() -> None:
    shape = model_shape("demo-bench")
    assert kv_bytes_per_second(shape, "float32", (446, 0.004), (1784, 0.0039)) == float("inf")


def test_the_overhead_is_bounded_by_the_planned_shapes_own_decode_layer() -> None:
    """demo-tiny's decode layer (0.36 ms) is faster than the calibration layer's dispatch (0.6 ms): the
    plan charges as overhead at most what leaves MIN_SHARE of the layer for its reads, and its decode
    step still comes back."""
    shape = model_shape("demo-tiny")
    times = LayerTimes(
        446, 0.0018, 0.00036, 65e9, 16e9, layer_overhead_seconds=0.0006, kv_bytes_per_second=6e9
    )
    big = LayerTimes(**{**times.__dict__, "decode_seconds": 0.0044})
    assert bounded_overhead(0.0006, shape, "float32", big) == 0.0006  # a bigger layer: the calibration figure
    bounded = bounded_overhead(0.0006, shape, "float32", times)
    cache = 446 * shape.kv_bytes_per_token_per_layer("float32") / 6e9
    assert bounded == pytest.approx((1 - MIN_SHARE) * 0.00036 - cache)
    fitted = LayerTimes(**{**times.__dict__, "layer_overhead_seconds": bounded})
    head = (shape.hidden + shape.embedding_params) * 4 / times.head_bytes_per_second
    step = decode_step_seconds(shape, _profile("demo-tiny", fitted), "float32", context=446)
    assert step == pytest.approx(shape.layers * 0.00036 + head, rel=1e-9)
    too_slow = decode_step_seconds(shape, _profile("demo-tiny", times), "float32", context=446)
    assert too_slow > 1.5 * step  # what the plan said before the bound
