"""Measure this machine for the planner: dense matmul rate, memory read bandwidth, per-layer overhead.

Each measurement repeats its operation for a time budget and keeps the median call, so a brief
disturbance does not set the number; the whole set runs `repeats` times and the profile keeps each
number's median with its spread ((max - min) / median), so a run on a busy machine shows itself. The
result is a device profile in the planner's JSON shape (`hybrid_operator.planner.hardware.device_from_dict`
reads it back).
"""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch
from hybrid_operator.planner.model_shape import ModelShape

from hybrid_workers.enums import DType
from hybrid_workers.torch_dtypes import TORCH_DTYPES


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


def _sizes(device: torch.device, dtype: torch.dtype | None = None) -> Sizes:
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
    m, k, n = _sizes(device, dtype).gemm
    a = torch.randn(m, k, device=device).to(dtype)  # [m, k] activations
    b = torch.randn(k, n, device=device).to(dtype)  # [k, n] weights
    with torch.no_grad():
        seconds = median_seconds(lambda: a @ b, device, budget)
    return 2 * m * k * n / seconds / 1e12


def prefill_tflops(
    device: torch.device, dtype: torch.dtype, budget: float, shape: ModelShape, rows: int
) -> float:
    """TFLOP/s of `rows`-token F.linear passes over one decoder layer's matrices of `shape` (a prefill's
    GEMMs: their shapes, not a square benchmark's, set the rate)."""
    matrices = layer_matrices(shape)
    weights = [torch.full(m, 0.01, device=device, dtype=dtype) for m in matrices]  # [out, in]
    inputs = {inp: torch.randn(rows, inp, device=device).to(dtype) for _, inp in matrices}  # [rows, in]

    def one_layer() -> None:
        for weight in weights:
            torch.nn.functional.linear(inputs[weight.shape[1]], weight)  # [rows, out]

    with torch.no_grad():
        seconds = median_seconds(one_layer, device, budget)
    return 2 * rows * sum(out * inp for out, inp in matrices) / seconds / 1e12


def layer_matrices(shape: ModelShape) -> list[tuple[int, int]]:
    """[out, in] of one decoder layer's projections: q, k, v, o, gate, up, down."""
    h, q, kv, i = (
        shape.hidden,
        shape.heads * shape.head_dim,
        shape.kv_heads * shape.head_dim,
        shape.intermediate,
    )
    return [(q, h), (kv, h), (kv, h), (h, q), (i, h), (i, h), (h, i)]


def _stream_rate(
    device: torch.device, dtype: torch.dtype, budget: float, matrices: list[tuple[int, int]]
) -> float:
    """Bytes/s of one-token F.linear passes over copies of `matrices` (enough to leave the caches)."""
    once = sum(out * inp for out, inp in matrices) * torch.empty((), dtype=dtype).element_size()
    copies = max(1, -(-_sizes(device, dtype).stream_bytes // once))
    # Filled with a constant, not empty: untouched or denormal memory would flatter or slow the pass.
    weights = [torch.full(m, 0.01, device=device, dtype=dtype) for _ in range(copies) for m in matrices]
    inputs = {inp: torch.full((1, inp), 0.01, device=device, dtype=dtype) for _, inp in matrices}  # [1, in]

    def one_pass() -> None:
        for weight in weights:  # [out, in]
            torch.nn.functional.linear(inputs[weight.shape[1]], weight)

    with torch.no_grad():
        seconds = median_seconds(one_pass, device, budget)
    return once * copies / seconds


def decode_gbps(device: torch.device, dtype: torch.dtype, budget: float, shape: ModelShape) -> float:
    """GB/s of weights a batch-1 decode step streams through `shape`'s own matrix shapes: the layers'
    projections and the lm_head, weighted by their bytes in one step (small matrices stream slower)."""
    layer_rate = _stream_rate(device, dtype, budget / 2, layer_matrices(shape))
    head_rate = _stream_rate(device, dtype, budget / 2, [(shape.vocab, shape.hidden)])
    layers = shape.layers * shape.linear_params_per_layer
    head = shape.embedding_params
    return (layers + head) / (layers / layer_rate + head / head_rate) / 1e9  # parameter counts: bytes cancel


def read_gbps(device: torch.device, budget: float) -> float:
    """GB/s of a plain reduction over a large float32 tensor (memory read bandwidth)."""
    data = torch.ones(SIZES[device.type].read_elements, device=device)  # [n] float32
    seconds = median_seconds(data.sum, device, budget)
    return data.numel() * 4 / seconds / 1e9


# The calibration model: small weights (so a step is all framework cost) but a real cache layout:
# 2 KV heads x head_dim 64 in float32 = 1 KiB of K+V per token per layer.
TINY_KV_BYTES = 2 * 2 * 64 * 4  # per token per layer


def _tiny_llama(layers: int, device: torch.device) -> Any:
    from transformers import LlamaConfig, LlamaForCausalLM

    config = LlamaConfig(
        vocab_size=128, hidden_size=256, intermediate_size=256, num_hidden_layers=layers,
        num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=8192,
    )  # fmt: skip
    torch.manual_seed(0)
    return LlamaForCausalLM(config).eval().to(device)


def _decode_step_seconds(layers: int, device: torch.device, budget: float, context: int = 16) -> float:
    """Median time of one decode forward (transformers eager path, DynamicCache) of the calibration
    model with `context` tokens cached."""
    model = _tiny_llama(layers, device)
    with torch.no_grad():
        prompt = (torch.arange(context, device=device) % 100)[None]  # [1, context]
        cache = model(input_ids=prompt, use_cache=True).cache
        token = torch.tensor([[1]], device=device)  # [1, 1]
        position = torch.tensor([[context]], device=device)  # [1, 1]

        def step() -> None:
            model(input_ids=token, position_ids=position, cache=cache, use_cache=True)
            cache.crop(-1)  # back to `context` tokens: every call sees the same cache

        return median_seconds(step, device, budget, min_calls=10)


def layer_overhead_seconds(device: torch.device, budget: float) -> float:
    """Fixed cost per decoder layer per decode step (dispatch, launches), from two small models.

    A calibration layer does almost no arithmetic, so (t(9 layers) - t(1 layer)) / 8 is what a layer
    costs regardless of its size.
    """
    one = _decode_step_seconds(1, device, budget / 2)
    nine = _decode_step_seconds(9, device, budget / 2)
    return max(0.0, (nine - one) / 8)


def kv_gbps(device: torch.device, budget: float, long: int = 2048, short: int = 16) -> float:
    """Bytes of cached K/V per second a decode step gets through (cache append + attention), from the
    step-time difference between `long` and `short` cached tokens over 4 layers.

    Runtimes that copy the cache on append (transformers' DynamicCache) touch each cached byte more
    than once per step; this rate is what the planner divides the KV bytes of a step by.
    """
    layers = 4
    extra = _decode_step_seconds(layers, device, budget / 2, long) - _decode_step_seconds(
        layers, device, budget / 2, short
    )
    if extra <= 0:
        return float("inf")
    return layers * (long - short) * TINY_KV_BYTES / extra / 1e9


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


Progress = Callable[[str], None]


def _quiet(_: str) -> None:
    """Progress sink that prints nothing."""


@dataclass
class _Runs:
    """Repeats of each measurement: median and spread by name, progress lines as they finish."""

    repeats: int
    progress: Progress
    total: int  # measurements per repeat, for the [i/n] counter
    done: int = 0
    spread: dict[str, float] | None = None

    def take(self, name: str, measure: Callable[[], float], unit: str) -> float:
        """Run `measure` `repeats` times; report and return the median (spread kept under `name`)."""
        values = [measure() for _ in range(self.repeats)]
        middle = statistics.median(values)
        spread = (max(values) - min(values)) / middle if middle > 0 and middle != float("inf") else 0.0
        self.spread = {**(self.spread or {}), name: round(spread, 4)}
        self.done += 1
        shown = ", ".join(f"{v:.4g}" for v in values)
        self.progress(f"calibrate [{self.done}/{self.total}] {name}: {middle:.4g} {unit} ({shown})")
        return middle


def measure_profile(
    device: torch.device,
    dtypes: list[str],
    budget: float,
    name: str,
    shape: ModelShape,
    rows: int = 512,
    repeats: int = 1,
    progress: Progress = _quiet,
) -> dict[str, Any]:
    """A device profile (planner JSON) measured on `device`; `budget` seconds per measurement, each
    measurement `repeats` times (median kept, spread recorded). Peak: a square-ish GEMM; sustained
    prefill and decode rates: on `shape`'s matrices (`rows` prompt tokens). `progress` gets one line per
    finished measurement."""
    runs = _Runs(repeats, progress, total=3 * len(dtypes) + 3)
    peak, tflops, decode = {}, {}, {}
    for d in dtypes:
        dtype = TORCH_DTYPES[DType(d)]
        peak[d] = runs.take(f"matmul {d}", partial(matmul_tflops, device, dtype, budget), "TFLOP/s")
    for d in dtypes:
        measure = partial(prefill_tflops, device, TORCH_DTYPES[DType(d)], budget, shape, rows)
        tflops[d] = runs.take(f"prefill GEMMs {d}", measure, "TFLOP/s")
    for d in dtypes:
        decode[d] = runs.take(
            f"decode GEMVs {d}", partial(decode_gbps, device, TORCH_DTYPES[DType(d)], budget, shape), "GB/s"
        )
    read = runs.take("read", partial(read_gbps, device, budget), "GB/s")
    overhead = runs.take("layer overhead", partial(layer_overhead_seconds, device, 2 * budget), "s")
    kv = runs.take("KV", partial(kv_gbps, device, 2 * budget), "GB/s")
    rounded = {dtype: round(rate, 5) for dtype, rate in tflops.items()}
    when = time.strftime("%Y-%m-%d %H:%M:%S")
    return {
        "kind_of_profile": "device",
        "id": name,
        "name": device_name(device),
        "kind": {"cuda": "gpu", "mps": "apple"}.get(device.type, "cpu"),
        "memory_gb": round(memory_gb(device), 2),
        # The plain read is the bandwidth "peak"; the GEMV rate is what a decode step streams.
        "memory_gbps": round(max(read, *decode.values()), 3),
        "peak_tflops": {dtype: round(max(rate, tflops[dtype]), 5) for dtype, rate in peak.items()},
        "sustained_tflops": rounded,
        "sustained_memory_gbps": round(max(decode.values()), 3),
        "decode_gbps": {dtype: round(rate, 3) for dtype, rate in decode.items()},
        "layer_overhead_seconds": round(overhead, 7),
        **({"kv_gbps": round(kv, 3)} if kv != float("inf") else {}),
        "measured": True,
        "measured_with": f"torch/{device.type}",  # the engine whose rates these are (engines.py)
        "repeats": repeats,
        "spread": runs.spread or {},
        "source": (
            f"hybrid-inference calibrate on {platform.node()} at {when}: torch {torch.__version__} "
            f"peak: matmul {SIZES[device.type].gemm}; prefill GEMMs ({rows} rows) and decode GEMVs on "
            f"{shape.name}'s matrix shapes; "
            f"sum-reduction read {read:.1f} GB/s, median of {repeats} repeats"
        ),
    }
