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


class _CountingSlot(TorchKVSlot):
    """A torch slot that records when it was asked to prefault, and what had been written by then."""

    prefaulted_before_any_layer: bool | None = None

    def prefault(self) -> None:
        self.prefaulted_before_any_layer = not self._direct and not any(self._committed)
        super().prefault()


def test_the_slot_is_prefaulted_when_the_header_arrives_before_any_layer_lands() -> None:
    stream = make_stream(LONG_PROMPT, encoding=WireEncoding.NONE)
    slot = _CountingSlot(
        MODEL.num_layers, MODEL.num_kv_heads, MODEL.head_dim, LONG_PROMPT, LONG_PROMPT + 4,
        MODEL.dtype, torch.device("cpu"),
    )  # fmt: skip
    receiver = KVReceiver(MODEL, stream.request, lambda *_: None, slot)
    receiver.feed(stream.frames[0])
    assert slot.prefaulted_before_any_layer is True
    for frame in stream.frames[1:]:
        receiver.feed(frame)
    receiver.finish()
    for index, (keys, _values) in enumerate(stream.layers):
        assert torch.equal(slot.layer_kv(index, LONG_PROMPT)[0], keys)  # the zeroing did not clobber


def test_without_a_slot_every_layer_lands_in_one_arena_touched_at_the_header() -> None:
    stream = make_stream(LONG_PROMPT, encoding=WireEncoding.NONE)
    handed: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
    receiver = KVReceiver(MODEL, stream.request, lambda i, k, v: handed.__setitem__(i, (k, v)))
    receiver.feed(stream.frames[0])
    arena = receiver._arena
    assert arena is not None and not arena.any()  # allocated and written (zeroed) before any layer
    for frame in stream.frames[1:]:
        receiver.feed(frame)
    receiver.finish()
    start, end = arena.ctypes.data, arena.ctypes.data + arena.nbytes
    for index, (keys, values) in enumerate(stream.layers):
        got_keys, got_values = handed[index]
        assert torch.equal(got_keys, keys) and torch.equal(got_values, values)
        assert start <= got_keys.data_ptr() < end and start <= got_values.data_ptr() < end
