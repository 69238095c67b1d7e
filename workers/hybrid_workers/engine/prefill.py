"""Prefill: one forward pass over the prompt that hands out each layer's K/V the moment it is final."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from transformers import DynamicCache

from hybrid_workers.engine.layer_hooks import LayerWatch, OnLayer, layer_hooks
from hybrid_workers.engine.loading import LoadedModel
from hybrid_workers.errors import UserError


@dataclass(frozen=True)
class PrefillResult:
    """What a prefill leaves behind."""

    logits: torch.Tensor  # [vocab] float32, next-token logits at the last prompt position
    cache: DynamicCache  # K/V of every layer for the whole prompt
    layer_seconds: tuple[float, ...]  # compute time of each decoder layer (excluding on_layer's own time)


def check_token_ids(lm: LoadedModel, token_ids: Sequence[int]) -> torch.Tensor:
    """Validate prompt token ids and return them as a [1, seq] tensor on the model's device."""
    if len(token_ids) == 0:
        raise UserError("prompt: empty; give at least one token")
    if len(token_ids) > lm.max_context:
        raise UserError(f"prompt: {len(token_ids)} tokens exceed the model's context of {lm.max_context}")
    bad = [
        t for t in token_ids if isinstance(t, bool) or not isinstance(t, int) or not 0 <= t < lm.vocab_size
    ]
    if bad:
        raise UserError(f"prompt: token id {bad[0]!r} outside the vocabulary [0, {lm.vocab_size})")
    return torch.tensor([list(token_ids)], dtype=torch.long, device=lm.device)  # [1, seq]


def prefill(lm: LoadedModel, token_ids: Sequence[int], on_layer: OnLayer | None = None) -> PrefillResult:
    """Run the prompt through the model, calling `on_layer(i, keys, values)` as each layer finishes.

    Each call happens right after decoder layer i ran and before layer i+1 starts; the tensors are
    the ones stored in the returned cache (not copies): the receiver must not modify them. Exceptions
    raised by on_layer abort the prefill and propagate. Safe to call from several threads at once,
    also while other threads run decode steps on the same model.
    """
    input_ids = check_token_ids(lm, token_ids)  # [1, seq]
    cache = DynamicCache(config=lm.model.config)
    watch = LayerWatch(cache, lm.num_layers, lm.device, on_layer)
    with layer_hooks(lm.model).watching(watch), torch.no_grad():
        output = lm.model(input_ids=input_ids, cache=cache, use_cache=True, logits_to_keep=1)
    logits = output.logits[0, -1].float()  # [vocab]
    return PrefillResult(logits=logits, cache=cache, layer_seconds=tuple(watch.seconds))
