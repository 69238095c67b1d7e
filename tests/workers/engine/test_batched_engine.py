"""TorchDecodeEngine: sequences decoded together give each the logits and tokens of decoding it alone."""

from __future__ import annotations

import random

import pytest
import torch
from hybrid_workers.engine import prefill
from hybrid_workers.engine.batched import TorchDecodeEngine
from hybrid_workers.engine.decode import forward_one

STEPS = 32


def _prompt(length: int, vocab: int) -> list[int]:
    rng = random.Random(length)
    return [1] + [rng.randrange(8, vocab) for _ in range(length - 1)]


def solo_greedy(lm, prompt: list[int], steps: int) -> list[torch.Tensor]:
    """Logits of steps 0..steps-1 with transformers' own cache and attention, one sequence alone."""
    result = prefill(lm, prompt)
    logits, cache = [result.logits], result.cache
    for position in range(len(prompt), len(prompt) + steps - 1):
        with torch.no_grad():
            logits.append(forward_one(lm, cache, int(logits[-1].argmax()), position))
    return logits


def near_tie(logits: torch.Tensor) -> bool:
    top = torch.topk(logits, 2).values
    return float(top[0] - top[1]) < 1e-4


@pytest.fixture(scope="module")
def engine(tiny_lm):
    return TorchDecodeEngine(tiny_lm)


def test_mixed_lengths_with_chunked_prefill_match_solo_decoding(tiny_lm, engine):
    prompts = [_prompt(n, tiny_lm.vocab_size) for n in (1, 3, 17, 40, 64, 100, 9, 250)]
    solo = [solo_greedy(tiny_lm, p, STEPS) for p in prompts]
    slots = [engine.new_slot(len(p), STEPS) for p in prompts]
    rows = []
    for slot, prompt in zip(slots, prompts, strict=True):
        for start in range(0, len(prompt), 32):  # chunked local prefill
            row = engine.prefill_chunk(slot, prompt[start : start + 32], start)
        rows.append(row)
    tokens = [[int(row.argmax())] for row in rows]
    for step in range(STEPS):
        for i, row in enumerate(rows):
            assert torch.allclose(row, solo[i][step], atol=1e-4, rtol=0), (i, step)
            assert int(row.argmax()) == int(solo[i][step].argmax()) or near_tie(solo[i][step])
        if step == STEPS - 1:
            break
        entries = [(s, t[-1], len(p) + step) for s, t, p in zip(slots, tokens, prompts, strict=True)]
        rows = engine.step(entries)
        for i in range(len(rows)):
            tokens[i].append(int(solo[i][step + 1].argmax()))  # follow the solo path exactly


def test_step_refuses_a_slot_whose_prompt_is_incomplete(engine, tiny_lm):
    slot = engine.new_slot(4, 4)
    with pytest.raises(ValueError, match="not ready"):
        engine.step([(slot, 1, 4)])
    with pytest.raises(ValueError, match="context"):
        engine.new_slot(tiny_lm.max_context, 1)
