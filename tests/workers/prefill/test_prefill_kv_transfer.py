"""Exact KV transfer: prefill worker -> gRPC loopback -> decode equals transformers' greedy generate."""

from __future__ import annotations

from typing import Any

import pytest
from hybrid_workers.decode.prefill_client import PrefillClient
from hybrid_workers.engine import SamplingParams
from hybrid_workers.engine.kv_slot import TorchKVSlot
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


class LandingOrder(TorchKVSlot):
    """A real KV slot that notes the order its layers land in (the receiver's commits)."""

    def __init__(self, lm: Any, prompt_len: int) -> None:
        super().__init__(
            lm.num_layers, lm.num_kv_heads, lm.head_dim, prompt_len, prompt_len + 1, lm.dtype, lm.device
        )
        self.landed: list[int] = []

    def commit_layer(self, layer: int) -> None:
        super().commit_layer(layer)
        self.landed.append(layer)

    def write_layer(self, layer: int, keys: Any, values: Any) -> None:
        super().write_layer(layer, keys, values)
        self.landed.append(layer)


def test_timings_describe_the_request(tiny_lm, prefill_server) -> None:
    # No clock is compared with another or with a bound: the record has one stamp per layer on each
    # side, every layer's receipt was stamped, the bytes are the wire's, the exposed transfer is its
    # documented formula, and the layers landed in order (the slot's commits say so, not the stamps).
    ids = prompt(64, seed=4)
    slot = LandingOrder(tiny_lm, len(ids))
    with PrefillClient(f"127.0.0.1:{prefill_server.port}", tiny_lm) as client:
        timings = client.prefill(ids, GREEDY, slot=slot).timings
    layers = tiny_lm.num_layers
    assert slot.landed == list(range(layers)) and slot.complete
    assert len(timings.layer_received_at_s) == len(timings.layer_done_at_s) == layers
    assert len(timings.layer_compute_s) == layers and 0.0 not in timings.layer_received_at_s
    assert timings.bytes == layers * 2 * len(ids) * tiny_lm.num_kv_heads * tiny_lm.head_dim * 4
    last_chunk = timings.first_chunk_at_s + timings.transfer_s
    assert timings.exposed_transfer_s == pytest.approx(max(0.0, last_chunk - timings.layer_done_at_s[-1]))


@pytest.mark.parametrize("mode", ["layerwise", "bulk"])
def test_decode_flag_kv_transfer_mode_is_the_mode_the_prefill_worker_sends(
    tiny_lm, prefill_server, mode: str
) -> None:
    # The receiver rejects a header whose mode differs from the request's, so a completed hand-off
    # proves the worker streamed in the mode the decode worker's flag asked for.
    from hybrid_workers.cli import build_parser
    from hybrid_workers.cli.decode import _prefill_client, build_config

    args = build_parser().parse_args(
        ["decode", "--prefill", f"127.0.0.1:{prefill_server.port}", "--kv-transfer-mode", mode]
    )
    ids = prompt(40, seed=3)
    with _prefill_client(build_config(args), tiny_lm) as client:
        assert client.mode == mode
        remote = client.prefill(ids, GREEDY)
    assert_matches_generate(tiny_lm, remote, ids, NEW_TOKENS)
