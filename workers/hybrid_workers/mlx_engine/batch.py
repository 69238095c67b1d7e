"""One decode step for many sequences in MLX: projections and MLP batched, attention per sequence.

mlx-lm's Llama takes one cache per layer for the whole batch, with one offset: sequences of
different lengths would need a left-padded BatchKVCache rebuilt whenever one joins or leaves. Here
the step runs the same mlx-lm modules (so the numbers are the model's own) over [batch, 1] tokens,
and only attention loops over the sequences: each applies RoPE at its own position and attends to
its own slot's KV cache — exactly what decoding it alone computes. The weights are read once per
step for the whole batch, which is where decode spends its memory bandwidth.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import mlx.core as mx
from mlx_lm.models.cache import KVCache


def _attention(attn: Any, x: mx.array, caches: Sequence[KVCache]) -> mx.array:
    """Self-attention of one new token per sequence. x: [batch, 1, hidden] -> [batch, 1, hidden]."""
    batch, new, _ = x.shape
    queries = attn.q_proj(x).reshape(batch, new, attn.n_heads, -1).transpose(0, 2, 1, 3)  # [b, heads, 1, d]
    keys = attn.k_proj(x).reshape(batch, new, attn.n_kv_heads, -1).transpose(0, 2, 1, 3)  # [b, kv, 1, d]
    values = attn.v_proj(x).reshape(batch, new, attn.n_kv_heads, -1).transpose(0, 2, 1, 3)
    rows = []
    for row, cache in enumerate(caches):
        query = attn.rope(queries[row : row + 1], offset=cache.offset)  # [1, heads, 1, d]
        key = attn.rope(keys[row : row + 1], offset=cache.offset)
        all_keys, all_values = cache.update_and_fetch(key, values[row : row + 1])  # [1, kv, len, d]
        rows.append(mx.fast.scaled_dot_product_attention(query, all_keys, all_values, scale=attn.scale))
    output = mx.concatenate(rows, axis=0).transpose(0, 2, 1, 3).reshape(batch, new, -1)  # [b, 1, heads*d]
    return attn.o_proj(output)


def step_logits(model: Any, caches: Sequence[Sequence[KVCache]], tokens: Sequence[int]) -> mx.array:
    """Next-token logits [batch, vocab] after appending tokens[i] to sequence i (caches[i]: its layers)."""
    inner = model.model
    hidden = inner.embed_tokens(mx.array(list(tokens))[:, None])  # [batch, 1, hidden]
    for index, layer in enumerate(inner.layers):
        layer_caches = [sequence[index] for sequence in caches]
        hidden = hidden + _attention(layer.self_attn, layer.input_layernorm(hidden), layer_caches)
        hidden = hidden + layer.mlp(layer.post_attention_layernorm(hidden))
    hidden = inner.norm(hidden)
    if model.args.tie_word_embeddings:
        return inner.embed_tokens.as_linear(hidden)[:, -1]  # [batch, vocab]
    return model.lm_head(hidden)[:, -1]
