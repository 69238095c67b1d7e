"""Roofline model of one request: prefill, decode and the KV transfer between them.

Every phase takes max(FLOPs / sustained FLOP/s, bytes / sustained bytes/s) — the roofline — so short
prompts come out bandwidth-bound and long ones compute-bound without a special case.
"""

from __future__ import annotations

from dataclasses import dataclass

from hybrid_operator.planner.errors import PlannerError
from hybrid_operator.planner.hardware import DeviceProfile
from hybrid_operator.planner.links import LinkProfile
from hybrid_operator.planner.model_shape import WIRE_BYTES, ModelShape, bytes_per_weight, dtype_bytes
from hybrid_operator.planner.weight_formats import weight_format

MODES = ("single", "bulk", "layerwise")


@dataclass(frozen=True)
class Request:
    """The request shape a plan is for."""

    prompt_tokens: int  # tokens prefilled
    output_tokens: int  # decode steps after the first token (EXO's convention: 32 -> 32 steps)
    dtype: str = "float16"  # model weights, activations and KV cache
    kv_compression: str = "none"  # KV wire encoding: none | fp8 | int8
    weights: str | None = None  # weight format (q4_0, fp8, mlx-4bit, ...); None: weights in `dtype`

    def __post_init__(self) -> None:
        for name in ("prompt_tokens", "output_tokens"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                raise PlannerError(f"{name} = {value!r} must be an integer >= 0")
        dtype_bytes(self.dtype)
        if self.weights is not None:
            weight_format(self.weights)
        if self.kv_compression not in WIRE_BYTES:
            raise PlannerError(
                f"unknown KV compression {self.kv_compression!r}; use one of {', '.join(WIRE_BYTES)}"
            )


def matmul_flops_per_second(device: DeviceProfile, request: Request) -> float:
    """Sustained FLOP/s of prefill matmuls: fp8/fp4 tensor cores for those formats where the device
    lists a rate for them; for formats that dequantise on the fly (GGUF, MLX quants) the engine's
    quantised-matmul rate (llama.cpp: int8 MMQ on CUDA, f16 on Metal); else the model dtype's rate."""
    fmt = weight_format(request.weights) if request.weights else None
    if fmt is not None and fmt.compute is not None and fmt.compute in device.sustained_tflops:
        return device.sustained_tflops[fmt.compute] * 1e12
    if fmt is not None and fmt.dequantised and request.dtype in device.quantised_tflops:
        return device.quantised_tflops[request.dtype] * 1e12
    return device.flops_per_second(request.dtype)


def prefill_layer_seconds(model: ModelShape, device: DeviceProfile, request: Request) -> float:
    """Time one decoder layer takes to prefill the prompt on `device` (all layers are alike): its
    projections at the matmul rate (slower in proportion for a layer narrower than the engine's
    `full_width`) plus its attention at the attention rate, or the weight read when that is longer
    (short prompts), plus the engine's per-layer dispatch cost."""
    if request.prompt_tokens == 0:
        return 0.0
    n = request.prompt_tokens
    narrow = max(1.0, device.full_width / model.hidden)  # layers narrower than the engine's full rate
    compute = narrow * model.layer_linear_flops(n) / matmul_flops_per_second(
        device, request
    ) + model.layer_attention_flops(n) / device.attention_flops_per_second(request.dtype)
    weight_bytes = model.linear_params_per_layer * bytes_per_weight(request.dtype, request.weights)
    roofline = max(compute, weight_bytes / device.bytes_per_second(request.dtype))
    return roofline + device.layer_overhead_seconds


def head_seconds(model: ModelShape, device: DeviceProfile, request: Request) -> float:
    """Time of the lm_head for one token (bandwidth-bound: it reads vocab x hidden weights)."""
    compute = model.head_flops / device.flops_per_second(request.dtype)
    head_bytes = model.embedding_params * bytes_per_weight(request.dtype, request.weights)
    return max(compute, head_bytes / device.bytes_per_second(request.dtype))


def prefill_seconds(model: ModelShape, device: DeviceProfile, request: Request) -> float:
    """Prefill of the whole prompt, ending with the first token's logits (= TTFT on one node)."""
    if request.prompt_tokens == 0:
        return 0.0
    layers = model.layers * prefill_layer_seconds(model, device, request)
    return layers + head_seconds(model, device, request) + device.step_overhead_seconds


def decode_step_seconds(
    model: ModelShape, device: DeviceProfile, dtype: str, context: int, weights_format: str | None = None
) -> float:
    """One decode step with `context` tokens cached: reads all weights and the whole KV cache, plus the
    engine's fixed costs per step and per layer."""
    weights = model.decode_read_bytes(dtype, weights_format) / device.bytes_per_second(dtype)
    cache = context * model.kv_bytes_per_token(dtype) / device.kv_bytes_per_second(dtype)
    flops = model.layers * model.layer_flops(1, past=context) + model.head_flops
    roofline = max(weights + cache, flops / device.flops_per_second(dtype))
    return roofline + model.layers * device.layer_overhead_seconds + device.step_overhead_seconds


def decode_seconds(model: ModelShape, device: DeviceProfile, request: Request) -> float:
    """All `output_tokens` decode steps; step i sees prompt_tokens + i cached tokens."""
    # Step time is affine in context, so the sum is n x (step at the mean context).
    n = request.output_tokens
    if n == 0:
        return 0.0
    mean_context = request.prompt_tokens + (n - 1) / 2
    first = decode_step_seconds(model, device, request.dtype, request.prompt_tokens, request.weights)
    later = decode_step_seconds(model, device, request.dtype, request.prompt_tokens + n - 1, request.weights)
    if first == later or n == 1:
        return n * first
    # Affine unless the roofline switches between bound regimes mid-way; sum exactly then.
    mid = decode_step_seconds(model, device, request.dtype, round(mean_context), request.weights)
    if abs((first + later) / 2 - mid) <= 1e-9 * mid:
        return n * (first + later) / 2
    steps = range(request.prompt_tokens, request.prompt_tokens + n)
    return sum(decode_step_seconds(model, device, request.dtype, ctx, request.weights) for ctx in steps)


def layer_send_seconds(model: ModelShape, link: LinkProfile, request: Request) -> float:
    """Time to send one layer's K and V for the whole prompt over `link`."""
    wire = model.kv_wire_bytes_per_layer(request.prompt_tokens, request.dtype, request.kv_compression)
    return wire / link.bytes_per_second


def exposed_transfer_seconds(mode: str, layers: int, t_compute: float, t_send: float) -> float:
    """Transfer time left after the prefill's last layer finishes (per-layer times are uniform).

    bulk: the whole cache is sent after the prefill: layers · t_send. layerwise: layer i leaves as
    soon as it is computed and the link is free, so the last send ends at
    max_i((i+1)·t_compute + (layers-i)·t_send); only the last layer is exposed while
    t_send <= t_compute, and the excess piles up (layers-1 times) when the link is slower.
    """
    if mode == "bulk":
        return layers * t_send
    if mode != "layerwise":
        raise PlannerError(f"unknown KV transfer mode {mode!r}; use bulk or layerwise")
    if layers == 0 or t_send == 0:
        return 0.0
    return t_send + max(0.0, (layers - 1) * (t_send - t_compute))
