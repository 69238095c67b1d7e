"""Monotonicity and limits of the request model: links, prompt length, transfer modes, compression."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hybrid_operator.planner import (
    PlannerError,
    Request,
    builtin_devices,
    builtin_links,
    device_profile,
    link_profile,
    make_plan,
    model_shape,
)
from hybrid_operator.planner.links import LinkProfile
from hybrid_operator.planner.placements import evaluate
from hybrid_operator.planner.roofline import (
    decode_seconds,
    decode_step_seconds,
    exposed_transfer_seconds,
    prefill_layer_seconds,
)
from hypothesis import given, settings
from hypothesis import strategies as st

DEVICE_IDS = sorted(builtin_devices())
LINKS = sorted(builtin_links().values(), key=lambda link: link.id)
MODELS = ["llama-3.1-8b", "qwen2.5-7b", "demo-bench"]
prompts = st.integers(min_value=1, max_value=65536)
device_ids = st.sampled_from(DEVICE_IDS)


@settings(max_examples=60, deadline=None)
@given(
    prompt=prompts,
    prefill=device_ids,
    decode=device_ids,
    model=st.sampled_from(MODELS),
    link=st.sampled_from(LINKS),
    speedup=st.floats(1.0, 100.0),
    latency_cut=st.floats(0.0, 1.0),
)
def test_a_faster_link_never_slows_a_split(
    prompt: int, prefill: str, decode: str, model: str, link: LinkProfile, speedup: float, latency_cut: float
) -> None:
    # "faster": at least as much bandwidth and at most as much latency
    faster = replace(link, gbps=link.gbps * speedup, latency_seconds=link.latency_seconds * latency_cut)
    shape, request = model_shape(model), Request(prompt, 16)
    for mode in ("bulk", "layerwise"):
        slow, fast = (
            evaluate(shape, device_profile(prefill), device_profile(decode), each, request, mode)
            for each in (link, faster)
        )
        assert fast.ttft_seconds <= slow.ttft_seconds
        assert fast.kv_exposed_seconds <= slow.kv_exposed_seconds


@pytest.mark.parametrize("model", MODELS)
def test_a_zero_length_prompt_never_favours_a_split(model: str) -> None:
    for first in DEVICE_IDS:
        for second in DEVICE_IDS:
            plan = make_plan(
                model_shape(model),
                [device_profile(first), device_profile(second)],
                link_profile("100gbe"),
                Request(0, 64),
            )
            assert plan.best.mode == "single", (first, second)


@settings(max_examples=200, deadline=None)
@given(
    layers=st.integers(1, 128),
    t_compute=st.floats(0, 1, allow_nan=False),
    t_send=st.floats(0, 1, allow_nan=False),
)
def test_layerwise_exposed_transfer_never_exceeds_bulk_and_matches_a_simulation(
    layers: int, t_compute: float, t_send: float
) -> None:
    layerwise = exposed_transfer_seconds("layerwise", layers, t_compute, t_send)
    assert layerwise <= exposed_transfer_seconds("bulk", layers, t_compute, t_send) + 1e-12
    # Independent event simulation: layer i can leave once computed and once the link is free.
    link_free = 0.0
    for i in range(layers):
        link_free = max(link_free, (i + 1) * t_compute) + t_send
    assert layerwise == pytest.approx(max(0.0, link_free - layers * t_compute), abs=1e-9)


def test_layerwise_exposes_one_layer_when_the_link_keeps_up_and_the_excess_when_not() -> None:
    assert exposed_transfer_seconds("layerwise", 32, 0.040, 0.030) == pytest.approx(0.030)
    assert exposed_transfer_seconds("layerwise", 32, 0.030, 0.040) == pytest.approx(0.040 + 31 * 0.010)


@pytest.mark.parametrize("dtype", ["float32", "bfloat16", "float16"])
@pytest.mark.parametrize("compression", ["fp8", "int8"])
def test_compression_reduces_transfer_time(dtype: str, compression: str) -> None:
    spark, mac, link = device_profile("dgx-spark"), device_profile("m3-ultra"), link_profile("10gbe")
    shape = model_shape("llama-3.1-8b")
    plain = evaluate(shape, spark, mac, link, Request(4096, 8, dtype), "layerwise")
    packed = evaluate(shape, spark, mac, link, Request(4096, 8, dtype, compression), "layerwise")
    assert packed.kv_transfer_seconds < plain.kv_transfer_seconds
    assert packed.kv_transfer_bytes < plain.kv_transfer_bytes / 1.9


@pytest.mark.parametrize("prompt", [0, 1, 500, 8192])
def test_decode_time_sums_every_step_over_the_growing_cache(prompt: int) -> None:
    shape, mac = model_shape("llama-3.1-8b"), device_profile("m3-ultra")
    request = Request(prompt, 40, "float16")
    steps = sum(decode_step_seconds(shape, mac, "float16", prompt + i) for i in range(40))
    assert decode_seconds(shape, mac, request) == pytest.approx(steps, rel=1e-12)


def test_longer_context_makes_each_decode_step_slower() -> None:
    shape, spark = model_shape("llama-3.1-8b"), device_profile("dgx-spark")
    assert decode_step_seconds(shape, spark, "float16", 32768) > decode_step_seconds(
        shape, spark, "float16", 0
    )


def test_remote_prefill_threshold_is_where_the_split_starts_to_win() -> None:
    shape = model_shape("llama-3.1-8b")
    spark, mac, link = device_profile("dgx-spark"), device_profile("m3-ultra"), link_profile("10gbe")
    plan = make_plan(shape, [spark, mac], link, Request(8192, 32))
    threshold = plan.remote_prefill_min_tokens
    assert threshold is not None and 1 < threshold < 8192

    def gain(tokens: int) -> float:
        request = replace(plan.request, prompt_tokens=tokens)
        local = evaluate(shape, mac, mac, link, request, "single").ttft_seconds
        return local - evaluate(shape, spark, mac, link, request, "layerwise").ttft_seconds

    assert gain(threshold) > 0 >= gain(threshold - 1)


def test_remote_prefill_never_pays_when_the_prefill_node_is_slower() -> None:
    shape = model_shape("llama-3.1-8b")
    plan = make_plan(
        shape, [device_profile("l4"), device_profile("h100")], link_profile("1gbe"), Request(4096, 4)
    )
    assert plan.best.mode == "single" and plan.best.prefill == "h100"
    assert plan.remote_prefill_min_tokens is None
    assert plan.speedup_vs_best_single_node == 1.0


def test_a_model_that_fits_nowhere_is_refused_with_the_sizes() -> None:
    with pytest.raises(PlannerError, match=r"fits on none of l4, rtx-4090: needs 141\.\d GB on l4"):
        make_plan(
            model_shape("llama-3.1-70b"),
            [device_profile("l4"), device_profile("rtx-4090")],
            link_profile("10gbe"),
            Request(1024, 8),
        )


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"prompt_tokens": -1, "output_tokens": 1}, "prompt_tokens = -1"),
        ({"prompt_tokens": 1, "output_tokens": 1.5}, "output_tokens = 1.5"),
        ({"prompt_tokens": 1, "output_tokens": 1, "dtype": "fp16"}, "unknown dtype 'fp16'"),
        ({"prompt_tokens": 1, "output_tokens": 1, "kv_compression": "fp4"}, "unknown KV compression 'fp4'"),
    ],
)
def test_bad_requests_are_rejected_naming_the_value(kwargs: dict, message: str) -> None:
    with pytest.raises(PlannerError, match=message):
        Request(**kwargs)


def test_a_measured_kv_rate_slows_long_contexts_only() -> None:
    shape = model_shape("demo-bench")
    base = device_profile("generic-cpu")
    copying = replace(base, kv_gbps=base.sustained_memory_gbps / 4)  # cache touched 4x per step
    assert decode_step_seconds(shape, copying, "float32", 0) == decode_step_seconds(shape, base, "float32", 0)
    kv_bytes = 2048 * shape.kv_bytes_per_token("float32")
    extra = kv_bytes / (copying.kv_gbps * 1e9) - kv_bytes / base.bytes_per_second("float32")
    slower = decode_step_seconds(shape, copying, "float32", 2048) - decode_step_seconds(
        shape, base, "float32", 2048
    )
    assert slower == pytest.approx(extra)


def test_generic_cpu_per_layer_overhead_bounds_small_models_in_both_phases() -> None:
    cpu = device_profile("generic-cpu")
    assert cpu.layer_overhead_seconds == pytest.approx(0.0005)
    tiny = model_shape("demo-tiny")
    request = Request(446, 64, dtype="float32")
    # Dispatch dominates a 4-layer, 64-wide model: a step costs at least 4 x 0.5 ms.
    assert decode_step_seconds(tiny, cpu, "float32", 446) >= tiny.layers * 0.0005
    assert prefill_layer_seconds(tiny, cpu, request) >= 0.0005
    # The overhead is the engine's: the same GPU under vLLM (CUDA graphs) pays a quarter of eager torch's.
    assert (
        device_profile("dgx-spark", "vllm").layer_overhead_seconds
        < 0.3 * device_profile("dgx-spark", "torch").layer_overhead_seconds
    )
