"""Helpers of the MLX tests: torch prefill -> MLX decode, batched, next to the torch engine's own decode.

Every prompt is prefilled by the torch engine (what a prefill worker does); its layers land in slots of
both engines, and the decode steps of all prompts run together through each engine's batched `step`
(the decode worker's path), so the weights are read once per step for all prompts: the trained model
costs seconds, not minutes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import torch
from hybrid_workers.engine import SamplingParams, prefill, sample
from hybrid_workers.engine.batched import TorchDecodeEngine

GREEDY = SamplingParams(max_tokens=64, temperature=0)
PREFILL_CHUNK = 128  # local prefill chunks: a long prompt takes several
NEAR_TIE = 1e-4  # a greedy choice between two logits closer than this may go either way


@dataclass(frozen=True)
class TorchRun:
    """The torch engine's greedy run of one prompt: tokens (step 0 first) and the logits that chose 1..n."""

    prompt: list[int]
    tokens: list[int]
    logits: list[torch.Tensor]  # logits[s] [vocab] chose tokens[s + 1]
    first_logits: torch.Tensor  # [vocab] the prefill's, which chose tokens[0]
    layers: list[tuple[torch.Tensor, torch.Tensor]]  # the prefill's K/V per layer, untouched


def slot_from(engine: Any, run: TorchRun) -> Any:
    """A slot of `engine` holding the torch prefill's layers, written in reverse order (any order must do)."""
    slot = engine.new_slot(len(run.prompt), len(run.tokens))
    for index in reversed(range(len(run.layers))):
        slot.write_layer(index, *run.layers[index])
    return slot


def forced_steps(engine: Any, runs: list[TorchRun], tokens: list[list[int]]) -> list[list[torch.Tensor]]:
    """Logits of every decode step of every run, all runs in one batched step each, fed `tokens`."""
    slots = [slot_from(engine, run) for run in runs]
    logits: list[list[torch.Tensor]] = [[] for _ in runs]
    for step in range(len(tokens[0]) - 1):
        entries = [
            (slot, seq[step], len(run.prompt) + step)
            for slot, seq, run in zip(slots, tokens, runs, strict=True)
        ]
        for row, out in zip(logits, engine.step(entries), strict=True):
            row.append(out)
    for slot in slots:
        slot.release()
    return logits


def torch_greedy(lm: Any, prompts: list[list[int]], new_tokens: int) -> list[TorchRun]:
    """Torch prefill of each prompt, then `new_tokens` greedy tokens of all of them on the torch engine."""
    firsts = []
    for prompt in prompts:
        result = prefill(lm, prompt)
        layers = [(layer.keys, layer.values) for layer in result.cache.layers]
        firsts.append((prompt, result.logits, layers, sample(result.logits, GREEDY, 0)[0]))
    engine = TorchDecodeEngine(lm)
    runs = [TorchRun(p, [first], [], logits, layers) for p, logits, layers, first in firsts]
    slots = [
        slot_from(engine, TorchRun(r.prompt, [0] * new_tokens, [], r.first_logits, r.layers)) for r in runs
    ]
    for step in range(new_tokens - 1):
        entries = [
            (slot, run.tokens[-1], len(run.prompt) + step) for slot, run in zip(slots, runs, strict=True)
        ]
        for run, logits in zip(runs, engine.step(entries), strict=True):
            run.logits.append(logits)
            run.tokens.append(int(torch.argmax(logits)))
    for slot in slots:
        slot.release()
    return runs


def mlx_greedy(engine: Any, runs: list[TorchRun]) -> list[list[int]]:
    """The MLX engine's own greedy runs (step + sample), continuing from each torch prefill's first token."""
    slots = [slot_from(engine, run) for run in runs]
    tokens = [[run.tokens[0]] for run in runs]
    for step in range(1, len(runs[0].tokens)):
        entries = [
            (slot, seq[-1], len(run.prompt) + step - 1)
            for slot, seq, run in zip(slots, tokens, runs, strict=True)
        ]
        for seq, row in zip(tokens, engine.step(entries), strict=True):
            seq.append(engine.sample(row, GREEDY, step)[0])
    for slot in slots:
        slot.release()
    return tokens


def mlx_local_logits(engine: Any, prompt: list[int]) -> torch.Tensor:
    """First-token logits of a local MLX prefill (in chunks of PREFILL_CHUNK)."""
    slot = engine.new_slot(len(prompt), 1)
    logits = None
    for start in range(0, len(prompt), PREFILL_CHUNK):
        logits = engine.prefill_chunk(slot, prompt[start : start + PREFILL_CHUNK], start)
    slot.release()
    assert logits is not None
    return logits


def top2_gap(logits: torch.Tensor) -> float:
    """Distance between the two largest logits [vocab]."""
    top = torch.topk(logits, 2).values
    return float(top[0] - top[1])
