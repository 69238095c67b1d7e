"""Exact KV transfer: prefill worker -> gRPC loopback -> decode equals transformers' greedy generate."""

from __future__ import annotations

import pytest
from hybrid_workers.decode.prefill_client import PrefillClient
from hybrid_workers.engine import SamplingParams
from kv_transfer_helpers import assert_matches_generate, prompt

NEW_TOKENS = 8
GREEDY = SamplingParams(max_tokens=NEW_TOKENS, temperature=0)


@pytest.mark.parametrize("mode", ["layerwise", "bulk"])
@pytest.mark.parametrize("length", [1, 17, 300])
def test_float32_kv_transfer_matches_generate(tiny_lm, prefill_server, mode: str, length: int) -> None:
    ids = prompt(length, seed=length)
    with PrefillClient(f"127.0.0.1:{prefill_server.port}", tiny_lm, mode=mode) as client:
        remote = client.prefill(ids, GREEDY)
    assert_matches_generate(tiny_lm, remote, ids, NEW_TOKENS)


@pytest.mark.parametrize("mode", ["layerwise", "bulk"])
@pytest.mark.parametrize("length", [5, 130])
def test_bfloat16_kv_transfer_matches_generate(
    tiny_lm_bf16, prefill_server_bf16, mode: str, length: int
) -> None:
    ids = prompt(length, seed=100 + length)
    with PrefillClient(f"127.0.0.1:{prefill_server_bf16.port}", tiny_lm_bf16, mode=mode) as client:
        remote = client.prefill(ids, GREEDY)
    assert_matches_generate(tiny_lm_bf16, remote, ids, NEW_TOKENS)


def test_small_chunks_split_layers_and_still_match(tiny_lm, prefill_server) -> None:
    ids = prompt(400, seed=7)  # 400 tokens x 2 heads x 32 dims x 4 bytes = 100 KiB per tensor: 2 chunks
    with PrefillClient(f"127.0.0.1:{prefill_server.port}", tiny_lm, chunk_bytes=64 << 10) as client:
        remote = client.prefill(ids, GREEDY)
    assert remote.timings.bytes == tiny_lm.num_layers * 2 * 400 * tiny_lm.num_kv_heads * tiny_lm.head_dim * 4
    assert_matches_generate(tiny_lm, remote, ids, NEW_TOKENS)


def test_seeded_sampling_of_the_first_token_matches_a_local_run(tiny_lm, prefill_server) -> None:
    from hybrid_workers.engine import prefill, sample

    ids = prompt(50, seed=3)
    params = SamplingParams(max_tokens=4, temperature=1.3, top_k=40, top_p=0.9, seed=1234)
    with PrefillClient(f"127.0.0.1:{prefill_server.port}", tiny_lm) as client:
        remote = client.prefill(ids, params)
    local_token, local_logprob = sample(prefill(tiny_lm, ids).logits, params, step=0)
    assert (remote.first_token, remote.first_logprob) == (local_token, pytest.approx(local_logprob, abs=1e-6))


def test_timings_describe_the_request(tiny_lm, prefill_server) -> None:
    ids = prompt(64, seed=4)
    with PrefillClient(f"127.0.0.1:{prefill_server.port}", tiny_lm) as client:
        timings = client.prefill(ids, GREEDY).timings
    assert len(timings.layer_received_at_s) == len(timings.layer_done_at_s) == tiny_lm.num_layers
    assert list(timings.layer_received_at_s) == sorted(timings.layer_received_at_s)
    assert 0 <= timings.exposed_transfer_s <= timings.total_s
    assert timings.first_chunk_at_s <= timings.layer_received_at_s[0] <= timings.total_s
