"""MLX prefill (local, short prompts and fallback) and decode, one token per forward pass.

Tokens are chosen by the torch engine's own `sample` on the MLX logits (copied to the host as
float32), so greedy, temperature, top-k, top-p and the per-step seeded RNG behave exactly as on the
torch engine: a sequence whose first token was sampled by a torch prefill worker and the rest here
reproduces a single-machine run with the same seed.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import mlx.core as mx
import torch

from hybrid_workers.engine.decode import Step
from hybrid_workers.engine.prefill import check_token_ids
from hybrid_workers.engine.sampling import SamplingParams, sample
from hybrid_workers.mlx_engine.arrays import to_torch_float32
from hybrid_workers.mlx_engine.kv_slot import MlxKVSlot
from hybrid_workers.mlx_engine.loading import MlxModel

PREFILL_CHUNK = 512  # prompt tokens per forward pass of a local prefill (bounds activation memory)


@dataclass(frozen=True)
class MlxPrefill:
    """What a local MLX prefill leaves behind."""

    logits: torch.Tensor  # [vocab] float32, next-token logits at the last prompt position
    slot: MlxKVSlot  # the prompt's K/V in every layer, with room for the completion


def capacity_for(mm: MlxModel, prompt_len: int, max_tokens: int) -> int:
    """Positions a sequence needs: prompt + completion, at most the model's context."""
    return max(1, min(mm.max_context, prompt_len + max_tokens))


def prefill(mm: MlxModel, token_ids: Sequence[int], capacity: int | None = None) -> MlxPrefill:
    """Run the prompt through the MLX model in chunks; UserError for bad token ids."""
    check_token_ids(mm, token_ids)  # type: ignore[arg-type]  # duck-typed: reads max_context, vocab_size
    slot = MlxKVSlot(mm, capacity or capacity_for(mm, len(token_ids), 0))
    ids = mx.array([list(token_ids)])  # [1, seq]
    logits = None
    for start in range(0, len(token_ids), PREFILL_CHUNK):
        logits = mm.model(ids[:, start : start + PREFILL_CHUNK], cache=slot.caches)[0, -1]  # [vocab]
        mx.eval(logits, [(c.keys, c.values) for c in slot.caches])
    assert logits is not None  # check_token_ids refuses an empty prompt
    slot.mark_filled(len(token_ids))
    return MlxPrefill(logits=to_torch_float32(logits), slot=slot)


def forward_one(mm: MlxModel, slot: MlxKVSlot, token: int) -> torch.Tensor:
    """Append `token` to the slot's cache and return the next-token logits [vocab] (float32, torch)."""
    logits = mm.model(mx.array([[token]]), cache=slot.caches)[0, -1]  # [vocab]
    return to_torch_float32(logits)


def decode(mm: MlxModel, slot: MlxKVSlot, first_token: int, params: SamplingParams) -> Iterator[Step]:
    """Yield the tokens after `first_token` (steps 1, 2, ...); ends only when the context is full."""
    token, step = first_token, 1
    while slot.length < mm.max_context:
        token, logprob = sample(forward_one(mm, slot, token), params, step)
        yield Step(token_id=token, logprob=logprob)
        step += 1


def token_stream(
    mm: MlxModel, prompt_ids: Sequence[int], params: SamplingParams, first: tuple[MlxKVSlot, int, float] | None
) -> Iterator[tuple[int, float]]:
    """(token, logprob) of steps 0, 1, 2, ...: the first from `first` (a remote prefill) or a local prefill."""
    if first is None:
        result = prefill(mm, prompt_ids, capacity_for(mm, len(prompt_ids), params.max_tokens))
        slot = result.slot
        token, logprob = sample(result.logits, params, 0)
    else:
        slot, token, logprob = first
    yield token, logprob
    for step in decode(mm, slot, token, params):
        yield step.token_id, step.logprob
