"""Wire compression end to end: `none` is exact; fp8/int8 cut the bytes 4x (float32) at a bounded cost.

The effect on tokens is printed (run with -s): greedy match length against generate and the largest
logit error of the first decode step versus uncompressed KV.
"""

from __future__ import annotations

import pytest
import torch
from hybrid_workers.decode.prefill_client import PrefillClient
from hybrid_workers.engine import SamplingParams
from hybrid_workers.engine.decode import forward_one
from kv_transfer_helpers import generate_greedy, prompt, remote_greedy

NEW_TOKENS = 24
GREEDY = SamplingParams(max_tokens=NEW_TOKENS, temperature=0)
LENGTH = 200


def first_decode_logits(lm, remote) -> torch.Tensor:
    """Logits [vocab] of the step after the first token, computed from the received cache."""
    with torch.no_grad():
        return forward_one(lm, remote.cache, remote.first_token, LENGTH)


def matching_prefix(a: list[int], b: list[int]) -> int:
    return next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))


@pytest.fixture(scope="module")
def received(tiny_lm, prefill_server) -> dict[str, tuple[object, torch.Tensor]]:
    """encoding -> (remote prefill for greedy decoding, first decode step's logits from another one)."""
    ids = prompt(LENGTH, seed=11)
    out = {}
    for encoding in ("none", "fp8", "int8"):
        with PrefillClient(f"127.0.0.1:{prefill_server.port}", tiny_lm, encoding=encoding) as client:
            out[encoding] = (
                client.prefill(ids, GREEDY),
                first_decode_logits(tiny_lm, client.prefill(ids, GREEDY)),
            )
    return out


def test_none_is_exact_and_compressed_encodings_are_a_quarter_of_float32(tiny_lm, received) -> None:
    none_bytes = received["none"][0].timings.bytes
    scales = tiny_lm.num_layers * 2 * tiny_lm.num_kv_heads * 4
    assert received["fp8"][0].timings.bytes == none_bytes // 4 + scales
    assert received["int8"][0].timings.bytes == none_bytes // 4 + scales
    ids = prompt(LENGTH, seed=11)
    assert remote_greedy(tiny_lm, received["none"][0], LENGTH, NEW_TOKENS)[:8] == generate_greedy(
        tiny_lm, ids, 8
    )


@pytest.mark.parametrize("encoding", ["fp8", "int8"])
def test_compressed_kv_changes_logits_only_slightly(tiny_lm, received, encoding: str) -> None:
    exact, lossy = received["none"][1], received[encoding][1]
    error = (lossy - exact).abs().max().item()
    reference = generate_greedy(tiny_lm, prompt(LENGTH, seed=11), NEW_TOKENS)
    tokens = remote_greedy(tiny_lm, received[encoding][0], LENGTH, NEW_TOKENS)
    saved = 1 - received[encoding][0].timings.bytes / received["none"][0].timings.bytes
    print(
        f"\n{encoding}: {saved:.1%} of the KV bytes saved, max logit error {error:.4f} "
        f"(logit range {exact.max() - exact.min():.2f}), greedy match {matching_prefix(tokens, reference)}"
        f"/{len(reference)} tokens"
    )
    assert 0 < error < 0.05 * (exact.max() - exact.min()).item()
