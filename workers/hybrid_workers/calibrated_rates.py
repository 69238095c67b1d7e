"""Turn timed decoder layers into the rates `plan` divides its counts by, so its formulas give the times back.

The planner charges a prefill layer of `n` tokens `linear FLOPs / P + attention FLOPs / P_att +
overhead` and a decode step `weight bytes / B + cached bytes / B_kv + layers · overhead` (roofline.py).
`calibrate` measures what one real decoder layer takes for a `rows`-token prefill and for a decode
step with `rows` and with more cached tokens (layer_calibration.py), the attention rate `P_att` on
its own, the lm_head's read rate and the per-layer overhead. `B_kv` is the slope between the two
decode steps; the effective `P` and `B` are the ones for which the planner's formulas reproduce the
measured times at `rows`: the work besides the matrix products (norms, rotary embeddings,
activations, residual adds) is charged at the rate of the products it comes with, so it scales with
the prompt as they do.
"""

from __future__ import annotations

from dataclasses import dataclass

from hybrid_operator.planner.model_shape import ModelShape, dtype_bytes

# A measured layer time left with less than this share after the overhead and attention are taken
# out means the parts were measured under different load; the remainder is floored there.
MIN_SHARE = 0.1


@dataclass(frozen=True)
class LayerTimes:
    """What `calibrate` measured for one dtype, in seconds and rates per second."""

    rows: int  # prompt tokens of the timed prefill = cached tokens of the timed decode step
    prefill_seconds: float  # one decoder layer of a `rows`-token prefill
    decode_seconds: float  # one decoder layer of a decode step with `rows` cached tokens
    attention_flops_per_second: float  # causal attention (sdpa), FLOPs as the planner counts them
    head_bytes_per_second: float  # lm_head matrix-vector read rate (bytes/s)
    layer_overhead_seconds: float  # fixed cost per layer per forward, which plan adds on top
    kv_bytes_per_second: float  # rate plan charges cached K/V bytes at (inf: not measured)


def bounded_overhead(overhead: float, shape: ModelShape, dtype: str, times: LayerTimes) -> float:
    """The per-layer overhead plan charges: the calibration model's (what a layer costs regardless of
    its size), but no more than leaves MIN_SHARE of the planned shape's measured decode layer for its
    weight and cache reads. A small model's layer can take less than the calibration layer's dispatch
    (demo-tiny's 64-wide decode layer: 0.36 ms against 0.6 ms); charging the larger figure would plan
    it slower than it runs."""
    cache = times.rows * shape.kv_bytes_per_token_per_layer(dtype) / times.kv_bytes_per_second
    return max(0.0, min(overhead, (1 - MIN_SHARE) * times.decode_seconds - cache))


def prefill_flops_per_second(shape: ModelShape, times: LayerTimes) -> float:
    """Effective matmul FLOP/s `P`: layer_linear_flops(rows) / P + layer_attention_flops(rows) / P_att
    + overhead = the measured prefill layer time."""
    attention = shape.layer_attention_flops(times.rows) / times.attention_flops_per_second
    rest = times.prefill_seconds - times.layer_overhead_seconds - attention
    return shape.layer_linear_flops(times.rows) / max(rest, MIN_SHARE * times.prefill_seconds)


def kv_bytes_per_second(
    shape: ModelShape, dtype: str, short: tuple[int, float], long: tuple[int, float]
) -> float:
    """Cached K/V bytes per second a decode step gets through (attention over them, the append), from
    one layer's decode step time at two (context, seconds) points; inf when the longer cache was
    measured no slower (noise: the planner then reads K/V at the weights' rate)."""
    extra = long[1] - short[1]
    if extra <= 0 or long[0] <= short[0]:
        return float("inf")
    return (long[0] - short[0]) * shape.kv_bytes_per_token_per_layer(dtype) / extra


def decode_bytes_per_second(shape: ModelShape, dtype: str, times: LayerTimes) -> float:
    """Effective decode bandwidth `B`: decode_read_bytes / B + rows cached tokens / B_kv + layers ·
    overhead = layers · the measured decode layer time + the lm_head read."""
    element = dtype_bytes(dtype)
    cache = times.rows * shape.kv_bytes_per_token_per_layer(dtype) / times.kv_bytes_per_second
    rest = times.decode_seconds - times.layer_overhead_seconds - cache
    layer = max(rest, MIN_SHARE * times.decode_seconds)
    head_bytes = (
        shape.decode_read_bytes(dtype)
        - shape.layers * (shape.linear_params_per_layer + 2 * shape.hidden) * element
    )
    return shape.decode_read_bytes(dtype) / (shape.layers * layer + head_bytes / times.head_bytes_per_second)
