"""Decode: continue from a filled cache, one token per forward pass."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
from transformers import DynamicCache

from hybrid_workers.engine.growing_cache import reserve
from hybrid_workers.engine.loading import LoadedModel
from hybrid_workers.engine.sampling import SamplingParams, sample


@dataclass(frozen=True)
class Step:
    """One generated token."""

    token_id: int
    logprob: float  # log-probability under the model's unmodified distribution


def forward_one(lm: LoadedModel, cache: DynamicCache, token: int, position: int) -> torch.Tensor:
    """Append `token` at `position` to the cache and return the next-token logits [vocab] (float32)."""
    input_ids = torch.tensor([[token]], dtype=torch.long, device=lm.device)  # [1, 1]
    position_ids = torch.tensor([[position]], dtype=torch.long, device=lm.device)  # [1, 1]
    output = lm.model(
        input_ids=input_ids, position_ids=position_ids, cache=cache, use_cache=True, logits_to_keep=1
    )
    return output.logits[0, -1].float()  # [vocab]


def decode(
    lm: LoadedModel, cache: DynamicCache, first_token: int, prompt_len: int, params: SamplingParams
) -> Iterator[Step]:
    """Yield the tokens after `first_token` (generation steps 1, 2, ...), one forward pass each.

    `cache` holds the prompt's `prompt_len` positions and is extended in place; its layers move once
    into buffers with room for `params.max_tokens` more (the tensors it held are not modified). The
    iterator never stops on EOS, stop strings or max_tokens (the caller decides); it ends only when
    the model's context is full.
    """
    if cache.get_seq_length() != prompt_len:
        raise ValueError(f"cache holds {cache.get_seq_length()} positions, prompt_len is {prompt_len}")
    reserve(cache, min(lm.max_context, prompt_len + params.max_tokens))
    token, position, step = first_token, prompt_len, 1
    while position < lm.max_context:
        with torch.no_grad():
            logits = forward_one(lm, cache, token, position)
        token, logprob = sample(logits, params, step)
        yield Step(token_id=token, logprob=logprob)
        position, step = position + 1, step + 1
