"""A receiver with a destination KV slot writes every layer into the slot: in place, or decoded."""

from __future__ import annotations

import pytest
import torch
from hybrid_workers.engine.kv_slot import TorchKVSlot
from hybrid_workers.kv.frames import WireEncoding
from hybrid_workers.kv.receiver import KVReceiver
from kv_stream_builder import LONG_PROMPT, MODEL, make_stream


def _receive(encoding: WireEncoding, prompt_tokens: int) -> tuple[TorchKVSlot, dict, list]:
    stream = make_stream(prompt_tokens, encoding=encoding)
    slot = TorchKVSlot(
        MODEL.num_layers, MODEL.num_kv_heads, MODEL.head_dim, prompt_tokens, prompt_tokens + 4,
        MODEL.dtype, torch.device("cpu"),
    )  # fmt: skip
    handed: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
    receiver = KVReceiver(MODEL, stream.request, lambda i, k, v: handed.__setitem__(i, (k, v)), slot)
    for frame in stream.frames:
        receiver.feed(frame)
    receiver.finish()
    return slot, handed, stream.layers


@pytest.mark.parametrize("prompt_tokens", [1, LONG_PROMPT])
def test_uncompressed_layers_land_in_the_slot_bit_exact(prompt_tokens: int) -> None:
    slot, handed, layers = _receive(WireEncoding.NONE, prompt_tokens)
    assert slot.complete
    for index, (keys, values) in enumerate(layers):
        got_keys, got_values = slot.layer_kv(index, prompt_tokens)
        assert torch.equal(got_keys, keys) and torch.equal(got_values, values)
        assert torch.equal(handed[index][0], keys)  # the sink still hears of every layer


def test_compressed_layers_are_decoded_into_the_slot() -> None:
    slot, handed, layers = _receive(WireEncoding.FP8, LONG_PROMPT)
    assert slot.complete
    for index, (keys, _values) in enumerate(layers):
        got_keys, _ = slot.layer_kv(index, LONG_PROMPT)
        assert torch.equal(got_keys, handed[index][0])  # exactly what the receiver decoded
        assert (got_keys - keys).abs().max().item() < 0.2 * keys.abs().max().item()
