"""The single-sequence reference the batch tests compare with (transformers' own cache and attention)."""

from __future__ import annotations

from typing import Any

import torch
from hybrid_workers.engine import prefill
from hybrid_workers.engine.decode import forward_one


def solo_logits(lm: Any, prompt: list[int], count: int) -> tuple[list[int], list[torch.Tensor]]:
    """Greedy tokens and the logits of steps 0..count-1 of `prompt` decoded alone."""
    result = prefill(lm, prompt)
    logits, cache = [result.logits], result.cache
    tokens = [int(result.logits.argmax())]
    for position in range(len(prompt), len(prompt) + count - 1):
        with torch.no_grad():
            logits.append(forward_one(lm, cache, tokens[-1], position))
        tokens.append(int(logits[-1].argmax()))
    return tokens, logits


def test_reference_continues_its_own_greedy_path(tiny_lm: Any) -> None:
    tokens, logits = solo_logits(tiny_lm, [1, 20, 30], 4)
    assert tokens == [int(row.argmax()) for row in logits] and len(tokens) == 4
