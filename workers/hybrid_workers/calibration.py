"""Measurements of this machine for the planner: matmul peak, read bandwidth, lm_head read, overheads.

Each measurement repeats its operation for a time budget and keeps the median call, so a brief
disturbance does not set the number. The decoder-layer timings are in layer_calibration.py; the
profile that puts them together, repeated with spreads, in calibration_profile.py.
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from hybrid_operator.planner.model_shape import ModelShape


@dataclass(frozen=True)
class Sizes:
    """Operand sizes per device kind: big enough to leave the caches and to amortise launches."""

    gemm: tuple[int, int, int]  # (rows, inner, cols) of the prefill-like matmul
    stream_bytes: int  # at least this many weight bytes per decode-like pass (beyond the caches)
    read_elements: int  # float32 elements summed by the read-bandwidth test


SIZES = {
    "cpu": Sizes((1024, 2048, 2048), 256 << 20, 64 << 20),
    # float16 matmuls on most CPUs are converted element by element (no native fp16 GEMM): a quarter
    # of the rows keeps one call near a second instead of minutes.
    "cpu-float16": Sizes((256, 2048, 2048), 64 << 20, 64 << 20),
    "cuda": Sizes((8192, 8192, 8192), 1 << 30, 512 << 20),
    "mps": Sizes((4096, 4096, 4096), 512 << 20, 256 << 20),
}


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()
    elif device.type == "mps":
        torch.mps.synchronize()


def sizes(device: torch.device, dtype: torch.dtype | None = None) -> Sizes:
    if device.type == "cpu" and dtype == torch.float16:
        return SIZES["cpu-float16"]
    return SIZES[device.type]


def median_seconds(
    fn: Callable[[], object], device: torch.device, budget: float, min_calls: int = 3
) -> float:
    """Median wall time of `fn()` over repeated calls for about `budget` seconds (after one warm-up).

    A warm-up that alone exceeds the budget is followed by one timed call only, so a slow dtype on a
    slow machine costs two calls, not `min_calls`.
    """
    start = time.perf_counter()
    fn()
    _sync(device)
    if time.perf_counter() - start > budget:
        min_calls = 1
    times: list[float] = []
    deadline = time.perf_counter() + budget
    while len(times) < min_calls or time.perf_counter() < deadline:
        start = time.perf_counter()
        fn()
        _sync(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def matmul_tflops(device: torch.device, dtype: torch.dtype, budget: float) -> float:
    """Dense matmul TFLOP/s at a prefill-like shape (2·m·k·n FLOPs per call)."""
    m, k, n = sizes(device, dtype).gemm
    a = torch.randn(m, k, device=device).to(dtype)  # [m, k] activations
    b = torch.randn(k, n, device=device).to(dtype)  # [k, n] weights
    with torch.no_grad():
        seconds = median_seconds(lambda: a @ b, device, budget)
    return 2 * m * k * n / seconds / 1e12


def _stream_rate(
    device: torch.device, dtype: torch.dtype, budget: float, matrices: list[tuple[int, int]]
) -> float:
    """Bytes/s of one-token F.linear passes over copies of `matrices` (enough to leave the caches)."""
    once = sum(out * inp for out, inp in matrices) * torch.empty((), dtype=dtype).element_size()
    copies = max(1, -(-sizes(device, dtype).stream_bytes // once))
    # Filled with a constant, not empty: untouched or denormal memory would flatter or slow the pass.
    weights = [torch.full(m, 0.01, device=device, dtype=dtype) for _ in range(copies) for m in matrices]
    inputs = {inp: torch.full((1, inp), 0.01, device=device, dtype=dtype) for _, inp in matrices}  # [1, in]

    def one_pass() -> None:
        for weight in weights:  # [out, in]
            torch.nn.functional.linear(inputs[weight.shape[1]], weight)

    with torch.no_grad():
        seconds = median_seconds(one_pass, device, budget)
    return once * copies / seconds


def head_gbps(device: torch.device, dtype: torch.dtype, budget: float, shape: ModelShape) -> float:
    """GB/s of one-token F.linear passes over `shape`'s lm_head (vocab x hidden): the read a decode step
    ends with, outside its decoder layers."""
    return _stream_rate(device, dtype, budget, [(shape.vocab, shape.hidden)]) / 1e9


def read_gbps(device: torch.device, budget: float) -> float:
    """GB/s of a plain reduction over a large float32 tensor (memory read bandwidth)."""
    data = torch.ones(SIZES[device.type].read_elements, device=device)  # [n] float32
    seconds = median_seconds(data.sum, device, budget)
    return data.numel() * 4 / seconds / 1e9


# The overhead model: small weights, so a step is all framework cost (dispatch per layer).
def _tiny_llama(layers: int, device: torch.device) -> Any:
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=128, hidden_size=256, intermediate_size=256, num_hidden_layers=layers,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=8192,
    )  # fmt: skip
    torch.manual_seed(0)
    return LlamaForCausalLM(config).eval().to(device)


def _decode_step_seconds(layers: int, device: torch.device, budget: float, context: int = 16) -> float:
    """Median time of one decode forward (transformers eager path) of the calibration model with
    `context` tokens cached in a cache that grows in place, as the workers' decode loop keeps it."""
    from hybrid_workers.engine.growing_cache import reserve

    model = _tiny_llama(layers, device)
    with torch.no_grad():
        prompt = (torch.arange(context, device=device) % 100)[None]  # [1, context]
        cache = model(input_ids=prompt, use_cache=True).cache
        reserve(cache, context + 1)
        token = torch.tensor([[1]], device=device)  # [1, 1]
        position = torch.tensor([[context]], device=device)  # [1, 1]

        def step() -> None:
            model(input_ids=token, position_ids=position, cache=cache, use_cache=True)
            cache.crop(
                -1
            )  # back to `context` tokens (still in the reserved buffers): the same cache each call

        return median_seconds(step, device, budget, min_calls=10)


def layer_overhead_seconds(device: torch.device, budget: float) -> float:
    """Fixed cost per decoder layer per decode step (dispatch, launches), from two small models.

    A calibration layer does almost no arithmetic, so (t(9 layers) - t(1 layer)) / 8 is what a layer
    costs regardless of its size.
    """
    one = _decode_step_seconds(1, device, budget / 2)
    nine = _decode_step_seconds(9, device, budget / 2)
    return max(0.0, (nine - one) / 8)


def memory_gb(device: torch.device) -> float:
    """Memory a model can use: the GPU's for cuda, else the machine's RAM."""
    if device.type == "cuda":
        return float(torch.cuda.get_device_properties(device).total_memory) / 1e9
    return float(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")) / 1e9


def device_name(device: torch.device) -> str:
    """Human-readable name of what was measured."""
    if device.type == "cuda":
        return str(torch.cuda.get_device_name(device))
    threads = torch.get_num_threads()
    return f"{platform.processor() or platform.machine()} ({device.type}, {threads} torch threads)"
