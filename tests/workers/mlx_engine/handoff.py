"""Helpers of the MLX tests: torch prefill -> MLX decode, and the torch engine's own greedy run to compare."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from hybrid_workers.engine import SamplingParams, prefill, sample
from hybrid_workers.engine.decode import forward_one
from hybrid_workers.engine.growing_cache import reserve
from hybrid_workers.mlx_engine import decode as mlx_decode
from hybrid_workers.mlx_engine.kv_slot import MlxKVSlot

NEAR_TIE = 1e-4  # a greedy choice between two logits closer than this may go either way


@dataclass(frozen=True)
class TorchRun:
    """The torch engine's greedy run: its tokens (step 0 first) and the logits that chose steps 1..n."""

    tokens: list[int]
    logits: list[torch.Tensor]  # logits[s] [vocab] chose tokens[s + 1]
    first_logits: torch.Tensor  # [vocab] the prefill's, which chose tokens[0]
    layers: list[tuple[torch.Tensor, torch.Tensor]]  # the prefill's K/V per layer, untouched


def torch_greedy(lm: Any, prompt: list[int], new_tokens: int) -> TorchRun:
    """Prefill + `new_tokens` greedy tokens on the torch engine, keeping every step's logits."""
    result = prefill(lm, prompt)
    layers = [(layer.keys, layer.values) for layer in result.cache.layers]
    greedy = SamplingParams(max_tokens=new_tokens, temperature=0)
    tokens = [sample(result.logits, greedy, 0)[0]]
    cache = result.cache
    reserve(cache, len(prompt) + new_tokens)  # copies: `layers` keep the prefill's tensors
    logits = []
    for step in range(new_tokens - 1):
        with torch.no_grad():
            logits.append(forward_one(lm, cache, tokens[-1], len(prompt) + step))
        tokens.append(int(torch.argmax(logits[-1])))
    return TorchRun(tokens, logits, result.logits, layers)


def slot_from(mm: Any, run: TorchRun, capacity: int) -> MlxKVSlot:
    """An MLX slot holding the torch prefill's layers, written in reverse order (any order must do)."""
    slot = MlxKVSlot(mm, capacity)
    for index in reversed(range(len(run.layers))):
        slot.add_layer(index, *run.layers[index])
    return slot


def mlx_teacher_forced(mm: Any, run: TorchRun, prompt_len: int) -> list[torch.Tensor]:
    """MLX logits at every decode step, fed the torch run's tokens (so each step sees the same history)."""
    slot = slot_from(mm, run, prompt_len + len(run.tokens))
    return [mlx_decode.forward_one(mm, slot, token) for token in run.tokens[:-1]]


def mlx_greedy(mm: Any, run: TorchRun, prompt: list[int]) -> list[int]:
    """MLX's own greedy run (the engine's token_stream) continuing from the torch prefill's first token."""
    greedy = SamplingParams(max_tokens=len(run.tokens), temperature=0)
    slot = slot_from(mm, run, len(prompt) + len(run.tokens))
    stream = mlx_decode.token_stream(mm, prompt, greedy, (slot, run.tokens[0], 0.0))
    return [token for token, _ in zip((t for t, _ in stream), range(len(run.tokens)), strict=False)]


def top2_gap(logits: torch.Tensor) -> float:
    """Distance between the two largest logits [vocab]."""
    top = torch.topk(logits, 2).values
    return float(top[0] - top[1])
