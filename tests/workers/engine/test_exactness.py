"""Split inference is exact: prefill, K/V as bytes, CacheBuilder, decode = `generate` greedy tokens."""

from __future__ import annotations

import random

import pytest
import torch
from hybrid_workers.engine import CacheBuilder, SamplingParams, decode, prefill, sample

NEW_TOKENS = 40
GREEDY = SamplingParams(max_tokens=NEW_TOKENS, temperature=0)


def _prompt(length: int, vocab: int) -> list[int]:
    rng = random.Random(length)
    return [1] + [rng.randrange(8, vocab) for _ in range(length - 1)]


def _through_bytes(tensor: torch.Tensor) -> torch.Tensor:
    """What the decode side holds after the wire: a new tensor made from the raw bytes."""
    raw = bytearray(tensor.contiguous().view(torch.uint8).numpy().tobytes())
    return torch.frombuffer(raw, dtype=torch.uint8).view(tensor.dtype).reshape(tensor.shape)


def split_greedy(lm, prompt: list[int], count: int) -> list[int]:
    """Greedy tokens from a prefill whose layers are shipped as bytes, rebuilt in reverse order, decoded."""
    shipped: list[tuple[int, torch.Tensor, torch.Tensor]] = []
    result = prefill(lm, prompt, lambda i, k, v: shipped.append((i, _through_bytes(k), _through_bytes(v))))
    builder = CacheBuilder(lm)
    for index, keys, values in reversed(shipped):
        builder.add_layer(index, keys, values)
    first, _ = sample(result.logits, GREEDY, 0)
    rest = decode(lm, builder.build(), first, len(prompt), GREEDY)
    return [first] + [step.token_id for step, _ in zip(rest, range(count - 1), strict=False)]


def reference_greedy(lm, prompt: list[int], count: int) -> list[int]:
    with torch.no_grad():
        output = lm.model.generate(
            torch.tensor([prompt]), max_new_tokens=count, do_sample=False, pad_token_id=0
        )
    return output[0, len(prompt) :].tolist()


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
@pytest.mark.parametrize("length", [1, 5, 100, 512 - NEW_TOKENS])
def test_split_greedy_equals_generate(tiny_lm, tiny_lm_bf16, dtype, length):
    lm = tiny_lm if dtype == "float32" else tiny_lm_bf16
    prompt = _prompt(length, lm.vocab_size)
    reference = reference_greedy(lm, prompt, NEW_TOKENS)
    # generate() stops at EOS; the tiny model's greedy runs here are long enough to be meaningful.
    assert len(reference) >= 32
    assert split_greedy(lm, prompt, len(reference)) == reference


def test_prompt_near_the_limit_fills_the_context_exactly(tiny_lm):
    prompt = _prompt(tiny_lm.max_context - NEW_TOKENS, tiny_lm.vocab_size)
    result = prefill(tiny_lm, prompt)
    first, _ = sample(result.logits, GREEDY, 0)
    steps = list(decode(tiny_lm, result.cache, first, len(prompt), GREEDY))
    assert len(steps) == NEW_TOKENS  # decode ends by itself only when the context is full
    assert result.cache.get_seq_length() == tiny_lm.max_context
