"""Helpers of the MLX tests: torch prefill -> MLX decode, and the torch engine's own greedy run to compare."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from hybrid_workers.engine import SamplingParams, prefill, sample
from hybrid_workers.engine.decode import forward_one
from hybrid_workers.engine.growing_cache import reserve

PREFILL_CHUNK = 128  # local prefill chunks: a near-limit prompt takes several
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


def slot_from(engine: Any, run: TorchRun, prompt_len: int) -> Any:
    """An MLX slot holding the torch prefill's layers, written in reverse order (any order must do)."""
    slot = engine.new_slot(prompt_len, len(run.tokens))
    for index in reversed(range(len(run.layers))):
        slot.write_layer(index, *run.layers[index])
    return slot


def mlx_teacher_forced(engine: Any, run: TorchRun, prompt_len: int) -> list[torch.Tensor]:
    """MLX logits at every decode step, fed the torch run's tokens (so each step sees the same history)."""
    slot = slot_from(engine, run, prompt_len)
    tokens = run.tokens[:-1]
    return [engine.step([(slot, token, prompt_len + s)])[0] for s, token in enumerate(tokens)]


def mlx_greedy(engine: Any, run: TorchRun, prompt: list[int]) -> list[int]:
    """The engine's own greedy run (step + sample) continuing from the torch prefill's first token."""
    greedy = SamplingParams(max_tokens=len(run.tokens), temperature=0)
    slot = slot_from(engine, run, len(prompt))
    tokens = [run.tokens[0]]
    for step in range(1, len(run.tokens)):
        [row] = engine.step([(slot, tokens[-1], len(prompt) + step - 1)])
        tokens.append(engine.sample(row, greedy, step)[0])
    slot.release()
    return tokens


def mlx_local_logits(engine: Any, prompt: list[int]) -> torch.Tensor:
    """First-token logits of a local MLX prefill (in the engine's chunks)."""
    slot = engine.new_slot(len(prompt), 1)
    logits = None
    for start in range(0, len(prompt), PREFILL_CHUNK):
        logits = engine.prefill_chunk(slot, prompt[start : start + PREFILL_CHUNK], start)
    return logits


def top2_gap(logits: torch.Tensor) -> float:
    """Distance between the two largest logits [vocab]."""
    top = torch.topk(logits, 2).values
    return float(top[0] - top[1])
