"""Time real decoder layers of a model shape: what one layer of a prefill and of a decode step costs.

A benchmark of a layer's matrix products alone misses the rest of a decoder layer — the RMSNorms,
rotary embeddings, the attention softmax and products over the prompt, SiLU and the gate product, the
residual adds, the cache append — which on a CPU is a large share of a small model's layer. So
`calibrate` builds a stack of transformers `LlamaDecoderLayer`s of the model's shape (random weights,
the measured dtype, this process's torch threads, sdpa attention as the workers run it) and times it
the way the workers run a model: a `rows`-token prefill with rotary embeddings and a causal mask into
a fresh cache, and one-token decode steps on caches that grow in place (the workers' `reserve`) at
two context lengths, whose difference is the cost of the cached K/V. The stack holds enough layers to
stream `Sizes.stream_bytes` of weights per pass (at most the model's own layer count), so its weights
are not reused from cache more than a whole model's would be. `calibration_profile.measure_profile`
turns the times into the rates `plan` uses (calibrated_rates.py).
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import torch
from hybrid_operator.planner.model_shape import ModelShape

from hybrid_workers.calibration import median_seconds, sizes

MAX_DEPTH = 16  # layers in a timed stack at most (small shapes: a model's worth of dispatch, built quickly)


def stack_depth(shape: ModelShape, dtype: torch.dtype, device: torch.device) -> int:
    """Layers in the timed stack: enough to stream `stream_bytes` of weights, at most the model's."""
    layer_bytes = shape.linear_params_per_layer * torch.empty((), dtype=dtype).element_size()
    wanted = -(-sizes(device, dtype).stream_bytes // layer_bytes)
    return max(1, min(wanted, shape.layers, MAX_DEPTH))


@lru_cache(maxsize=1)  # one stack at a time: repeats of one dtype reuse it; the next dtype replaces it
def layer_stack(shape: ModelShape, dtype: torch.dtype, device: torch.device) -> Any:
    """A transformers LlamaModel of `stack_depth` decoder layers of `shape` (random weights, sdpa), whose
    token embedding is never used (the timed passes feed hidden states)."""
    from transformers import LlamaModel

    config = _config(shape, stack_depth(shape, dtype, device), max(shape.max_context or 0, 131072))
    torch.manual_seed(0)
    with torch.device(device):
        model = LlamaModel(config)
    return model.eval().to(dtype)


def _config(shape: ModelShape, layers: int, positions: int) -> Any:
    """A LlamaConfig of `shape`'s widths with `layers` decoder layers, a 16-token vocabulary (the timed
    passes read no real lm_head) and sdpa attention, as the workers' models run (loading.py keeps the
    default)."""
    from transformers import LlamaConfig

    config = LlamaConfig(
        hidden_size=shape.hidden, intermediate_size=shape.intermediate, num_hidden_layers=layers,
        num_attention_heads=shape.heads, num_key_value_heads=shape.kv_heads, head_dim=shape.head_dim,
        vocab_size=16, max_position_embeddings=positions,
    )  # fmt: skip
    config._attn_implementation = "sdpa"
    return config


def prefill_layer_seconds(
    device: torch.device, dtype: torch.dtype, budget: float, shape: ModelShape, rows: int
) -> float:
    """One decoder layer's share of a `rows`-token prefill (median pass over the stack / its depth)."""
    from transformers import DynamicCache

    model = layer_stack(shape, dtype, device)
    hidden = torch.randn(1, rows, shape.hidden, device=device).to(dtype)  # [1, rows, hidden]

    def prefill() -> None:
        model(inputs_embeds=hidden, cache=DynamicCache(config=model.config), use_cache=True)

    with torch.no_grad():
        return median_seconds(prefill, device, budget) / model.config.num_hidden_layers


def decode_layer_seconds(
    device: torch.device, dtype: torch.dtype, budget: float, shape: ModelShape, context: int
) -> float:
    """One decoder layer's share of a one-token decode step with `context` tokens cached (random K/V
    in a cache that grows in place, as in the workers' decode loop; cut back to `context` after each
    step)."""
    from transformers import DynamicCache

    from hybrid_workers.engine.growing_cache import reserve

    model = layer_stack(shape, dtype, device)
    cache = DynamicCache(config=model.config)
    token = torch.randn(1, 1, shape.hidden, device=device).to(dtype)  # [1, 1, hidden]
    position = torch.tensor([[context]], device=device)  # [1, 1]
    for index in range(model.config.num_hidden_layers):
        keys, values = (
            torch.randn(1, shape.kv_heads, context, shape.head_dim, device=device).to(dtype)  # [1, KV, n, d]
            for _ in range(2)
        )
        cache.update(keys, values, index)
    reserve(cache, context + 1)

    def step() -> None:
        model(inputs_embeds=token, position_ids=position, cache=cache, use_cache=True)
        cache.crop(-1)  # back to `context` tokens, still inside the reserved buffers

    with torch.no_grad():
        return median_seconds(step, device, budget, min_calls=10) / model.config.num_hidden_layers


def attention_tflops(
    device: torch.device, dtype: torch.dtype, budget: float, shape: ModelShape, tokens: int
) -> float:
    """TFLOP/s of one layer's causal attention over a `tokens`-token prompt (QK^T, softmax, AV through
    transformers' sdpa function, grouped KV heads), counted as the planner counts it."""
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    module = layer_stack(shape, dtype, device).layers[0].self_attn
    query = torch.randn(1, shape.heads, tokens, shape.head_dim, device=device).to(dtype)  # [1, H, n, d]
    key = torch.randn(1, shape.kv_heads, tokens, shape.head_dim, device=device).to(dtype)  # [1, KV, n, d]
    attend = ALL_ATTENTION_FUNCTIONS["sdpa"]
    with torch.no_grad():
        seconds = median_seconds(
            lambda: attend(module, query, key, key, None, dropout=0.0, scaling=module.scaling), device, budget
        )
    return shape.layer_attention_flops(tokens) / seconds / 1e12


def step_overhead_seconds(device: torch.device, budget: float, shape: ModelShape) -> float:
    """What the workers' decode step costs besides its decoder layers and lm_head read: the token
    embedding, the logits' slice and cast, sampling (log_softmax, argmax) and the step's Python, taken
    through the engine's own loop (`engine.decode.decode`) on a model of `shape`'s width with no
    decoder layers and a 16-token vocabulary (so the lm_head reads nothing). The per-forward work the
    timed layer stack already holds (rotary embeddings, the mask, the final norm: its per-layer times
    include their share) is timed on the same model's LlamaModel and taken out, so plan counts it
    once."""
    from transformers import DynamicCache, LlamaForCausalLM

    from hybrid_workers.engine.decode import decode
    from hybrid_workers.engine.loading import LoadedModel
    from hybrid_workers.engine.sampling import SamplingParams

    context = 1 << 30  # positions only grow with the calls: never the loop's end
    config = _config(shape, 0, context)
    torch.manual_seed(0)
    with torch.device(device):
        model = LlamaForCausalLM(config).eval()
    lm = LoadedModel(
        model=model, tokenizer=None, name="calibration", device=device, dtype=torch.float32,
        fingerprint="", num_layers=0, num_kv_heads=shape.kv_heads, head_dim=shape.head_dim,
        max_context=context, eos_token_ids=frozenset(), vocab_size=16,
    )  # fmt: skip
    steps = decode(lm, DynamicCache(config=config), 1, 0, SamplingParams(max_tokens=1, temperature=0))
    engine = median_seconds(lambda: next(steps), device, budget / 2, min_calls=10)
    token = torch.randn(1, 1, shape.hidden, device=device)  # [1, 1, hidden]
    position = torch.tensor([[0]], device=device)  # [1, 1]
    cache = DynamicCache(config=config)
    with torch.no_grad():
        stack = median_seconds(
            lambda: model.model(inputs_embeds=token, position_ids=position, cache=cache, use_cache=True),
            device,
            budget / 2,
            min_calls=10,
        )
    return max(0.0, engine - stack)
