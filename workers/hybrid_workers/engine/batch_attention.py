"""Attention over per-sequence KV slots, plugged into transformers as an attention implementation.

Registered as `hybrid_batched` (transformers' AttentionInterface). A forward pass that carries a
`BatchPlan` in the `hybrid_batch` keyword runs every sequence's attention against its own slot:
the new tokens' K/V (post-RoPE) are written into the slot at their positions, then one
scaled_dot_product_attention call per sequence reads exactly the positions it owns — the same
shapes and numbers as decoding that sequence alone, so batch-mates never leak into a sequence's
attention. Everything else in the layer (projections, MLP, norms) runs batched: that is where the
weights are read once for all sequences. Forward passes without a plan (scoring, the prefill
worker's prefill) fall through to transformers' own sdpa attention unchanged.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from transformers import AttentionInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

from hybrid_workers.engine.kv_slot import TorchKVSlot

IMPLEMENTATION = "hybrid_batched"
PLAN_KEYWORD = "hybrid_batch"


@dataclass(frozen=True)
class BatchPlan:
    """Row i of the forward's input belongs to slots[i] and starts at position starts[i]."""

    slots: Sequence[TorchKVSlot]
    starts: Sequence[int]


def _chunk_mask(start: int, length: int, device: torch.device) -> torch.Tensor | None:
    """Causal mask [length, start + length] for `length` new queries after `start` cached positions."""
    if length == 1:
        return None  # one query sees every cached position and itself
    rows = torch.arange(length, device=device).unsqueeze(1) + start  # [length, 1]
    cols = torch.arange(start + length, device=device).unsqueeze(0)  # [1, start + length]
    return cols <= rows  # [length, start + length] bool, True = attend


def batched_attention(
    module: Any,
    query: torch.Tensor,  # [batch, heads, new, head_dim]
    key: torch.Tensor,  # [batch, kv_heads, new, head_dim], post-RoPE, the new positions only
    value: torch.Tensor,  # [batch, kv_heads, new, head_dim]
    attention_mask: torch.Tensor | None,
    dropout: float = 0.0,
    scaling: float | None = None,
    **kwargs: Any,
) -> tuple[torch.Tensor, None]:
    """Attention output [batch, new, heads, head_dim] (transformers' layout)."""
    plan: BatchPlan | None = kwargs.get(PLAN_KEYWORD)
    if plan is None:
        return sdpa_attention_forward(
            module, query, key, value, attention_mask, dropout=dropout, scaling=scaling, **kwargs
        )
    layer, new = module.layer_idx, query.shape[2]
    outputs = []
    for row, (slot, start) in enumerate(zip(plan.slots, plan.starts, strict=True)):
        slot.write_positions(layer, start, key[row], value[row])
        keys, values = slot.layer_kv(layer, start + new)  # [1, kv_heads, start + new, head_dim]
        out = F.scaled_dot_product_attention(
            query[row : row + 1],
            keys,
            values,
            attn_mask=_chunk_mask(start, new, query.device),
            scale=scaling,
            enable_gqa=True,
        )  # [1, heads, new, head_dim]
        outputs.append(out)
    merged = outputs[0] if len(outputs) == 1 else torch.cat(outputs)  # [batch, heads, new, head_dim]
    return merged.transpose(1, 2).contiguous(), None


def install(model: Any) -> None:
    """Route `model`'s attention through `batched_attention` (idempotent; plain forwards unchanged)."""
    AttentionInterface.register(IMPLEMENTATION, batched_attention)
    AttentionMaskInterface.register(IMPLEMENTATION, sdpa_mask)
    if model.config._attn_implementation != IMPLEMENTATION:
        model.set_attn_implementation(IMPLEMENTATION)
