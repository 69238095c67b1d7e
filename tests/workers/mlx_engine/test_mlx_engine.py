"""MlxDecodeEngine: a batched step gives each sequence what decoding it alone gives; local prefill chunks."""

from __future__ import annotations

from typing import Any

import torch
from hybrid_workers.engine import SamplingParams
from hybrid_workers.mlx_engine.engine import MlxDecodeEngine

STEPS = 8


def prefilled(engine: MlxDecodeEngine, prompt: list[int], chunk: int) -> tuple[Any, torch.Tensor]:
    slot = engine.new_slot(len(prompt), STEPS + 1)
    logits = None
    for start in range(0, len(prompt), chunk):
        logits = engine.prefill_chunk(slot, prompt[start : start + chunk], start)
    assert logits is not None and slot.complete
    return slot, logits


def test_batched_steps_equal_solo_steps_and_chunking_does_not_matter(tiny_mlx: Any) -> None:
    engine = MlxDecodeEngine(tiny_mlx)
    prompts = [tiny_mlx.tokenizer.encode(text) for text in ("Hi", "The KV cache " * 12, "a b c d e f g")]
    greedy = SamplingParams(max_tokens=STEPS, temperature=0)
    solo = []
    for prompt in prompts:
        slot, logits = prefilled(engine, prompt, chunk=len(prompt))
        rows, token = [], engine.sample(logits, greedy, 0)[0]
        for step in range(STEPS):
            [row] = engine.step([(slot, token, len(prompt) + step)])
            rows.append(row)
            token = int(torch.argmax(row))
        solo.append(rows)
    slots, tokens = [], []
    for prompt in prompts:
        slot, logits = prefilled(engine, prompt, chunk=5)  # several chunks
        slots.append(slot)
        tokens.append(engine.sample(logits, greedy, 0)[0])
    for step in range(STEPS):
        entries = [
            (slot, token, len(p) + step) for slot, token, p in zip(slots, tokens, prompts, strict=True)
        ]
        rows = engine.step(entries)
        for index, row in enumerate(rows):
            assert float((row - solo[index][step]).abs().max()) < 1e-4
        tokens = [int(torch.argmax(row)) for row in rows]


def test_seeded_sampling_depends_only_on_seed_and_step(tiny_mlx: Any) -> None:
    engine = MlxDecodeEngine(tiny_mlx)
    params = SamplingParams(max_tokens=4, temperature=0.9, top_p=0.95, top_k=40, seed=3)
    logits = prefilled(engine, tiny_mlx.tokenizer.encode("Sampling is seeded"), chunk=64)[1]
    assert engine.sample(logits, params, 2) == engine.sample(logits, params, 2)
