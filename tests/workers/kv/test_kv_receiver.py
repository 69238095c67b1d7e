"""The receiver accepts exactly the protocol's streams and names each violation with its own reason."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import pytest
import torch
from hybrid_workers.enums import WireEncoding
from hybrid_workers.kv.errors import KVProtocolError, Reason
from hybrid_workers.kv.frames import PROTOCOL_VERSION, Frame, Header, LayerChunk, TensorKind, checksum
from hybrid_workers.kv.receiver import KVReceiver
from kv_stream_builder import LONG_PROMPT, MODEL, Stream, make_stream, trailer

Received = dict[int, tuple[torch.Tensor, torch.Tensor]]


def run(stream: Stream, frames: list[Frame] | None = None) -> tuple[KVReceiver, Received]:
    """Feed frames (default: the stream's own) and finish; returns the receiver and the layers it gave."""
    received: Received = {}
    receiver = KVReceiver(MODEL, stream.request, lambda i, k, v: received.__setitem__(i, (k, v)))
    for frame in stream.frames if frames is None else frames:
        receiver.feed(frame)
    receiver.finish()
    return receiver, received


def chunk_positions(frames: list[Frame]) -> list[int]:
    return [i for i, frame in enumerate(frames) if isinstance(frame, LayerChunk)]


@pytest.mark.parametrize("prompt_tokens", [1, 5, LONG_PROMPT])
def test_valid_stream_gives_every_layer_bit_exact(prompt_tokens: int) -> None:
    stream = make_stream(prompt_tokens)
    receiver, received = run(stream)
    assert sorted(received) == list(range(MODEL.num_layers))
    for index, (keys, values) in enumerate(stream.layers):
        assert torch.equal(received[index][0], keys)
        assert torch.equal(received[index][1], values)
    assert receiver.trailer == stream.frames[-1]


def test_long_prompt_travels_in_several_chunks_per_tensor() -> None:
    stream = make_stream(LONG_PROMPT)
    chunks = [f for f in stream.frames if isinstance(f, LayerChunk)]
    assert len(chunks) == MODEL.num_layers * 2 * 2
    assert {c.offset for c in chunks} == {0, 64 << 10}


def replace_header(**changes: object) -> Callable[[list[Frame]], list[Frame]]:
    def mutate(frames: list[Frame]) -> list[Frame]:
        assert isinstance(frames[0], Header)
        return [dataclasses.replace(frames[0], **changes), *frames[1:]]  # type: ignore[arg-type]

    return mutate


def replace_chunk(position: int, **changes: object) -> Callable[[list[Frame]], list[Frame]]:
    """Change fields of one chunk; its checksum is recomputed unless `crc32` is among the changes."""

    def mutate(frames: list[Frame]) -> list[Frame]:
        index = chunk_positions(frames)[position]
        frames = list(frames)
        chunk = dataclasses.replace(frames[index], **changes)  # type: ignore[arg-type]
        if "crc32" not in changes:
            chunk = dataclasses.replace(chunk, crc32=checksum(chunk.data, chunk.scales))
        frames[index] = chunk
        return frames

    return mutate


def drop_chunks(*positions: int) -> Callable[[list[Frame]], list[Frame]]:
    def mutate(frames: list[Frame]) -> list[Frame]:
        gone = {chunk_positions(frames)[p] for p in positions}
        return [f for i, f in enumerate(frames) if i not in gone]

    return mutate


def duplicate_layer_zero(frames: list[Frame]) -> list[Frame]:
    first_layer = [f for f in frames if isinstance(f, LayerChunk) and f.layer == 0]
    at = chunk_positions(frames)[len(first_layer)]  # first chunk of layer 1
    return [*frames[:at], *first_layer, *frames[at:]]


def truncate_data(frames: list[Frame]) -> list[Frame]:
    chunk = frames[1]
    assert isinstance(chunk, LayerChunk)
    return replace_chunk(0, data=chunk.data[:-100])(frames)


def oversize_data(frames: list[Frame]) -> list[Frame]:
    chunk = frames[1]
    assert isinstance(chunk, LayerChunk)
    return replace_chunk(0, data=bytes(chunk.data) + bytes(100))(frames)


MALFORMED = {
    "wrong version": (replace_header(protocol_version=PROTOCOL_VERSION + 1), Reason.VERSION),
    "wrong fingerprint": (replace_header(model_fingerprint="cd" * 32), Reason.FINGERPRINT),
    "wrong dtype": (replace_header(dtype="bfloat16"), Reason.DTYPE),
    "wrong shape": (replace_header(keys_shapes=((1, 2, 6, 8),) * 3), Reason.BAD_HEADER),
    "chunk size too small": (replace_header(chunk_bytes=1024), Reason.BAD_HEADER),
    "missing layer": (drop_chunks(4, 5, 6, 7), Reason.MISSING_LAYER),
    "last layer missing": (drop_chunks(8, 9, 10, 11), Reason.MISSING_LAYER),
    "duplicate layer": (duplicate_layer_zero, Reason.DUPLICATE_LAYER),
    "missing chunk": (drop_chunks(0), Reason.ORDER),
    "values before keys": (drop_chunks(0, 1), Reason.ORDER),
    "truncated chunk": (truncate_data, Reason.TRUNCATED_CHUNK),
    "oversize frame": (oversize_data, Reason.OVERSIZE_FRAME),
    "bad checksum": (replace_chunk(3, crc32=12345), Reason.CHECKSUM),
    "layer out of range": (replace_chunk(0, layer=9), Reason.ORDER),
    "scales with encoding none": (replace_chunk(0, scales=b"\0" * 8), Reason.BAD_SCALES),
    "no header": (lambda frames: frames[1:], Reason.ORDER),
    "two headers": (lambda frames: [frames[0], *frames], Reason.ORDER),
    "trailer twice": (lambda frames: [*frames, frames[-1]], Reason.TRAILING_DATA),
    "token outside vocabulary": (lambda f: [*f[:-1], trailer(3, first_token=100)], Reason.BAD_TRAILER),
    "timings for too few layers": (lambda f: [*f[:-1], trailer(2)], Reason.BAD_TRAILER),
    "stream cut mid-layer": (lambda frames: frames[:6], Reason.STREAM_ENDED),
    "stream cut before trailer": (lambda frames: frames[:-1], Reason.STREAM_ENDED),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_each_violation_has_its_reason_and_frees_the_layer_in_flight(case: str) -> None:
    mutate, reason = MALFORMED[case]
    stream = make_stream(LONG_PROMPT)
    received: Received = {}
    receiver = KVReceiver(MODEL, stream.request, lambda i, k, v: received.__setitem__(i, (k, v)))
    with pytest.raises(KVProtocolError) as caught:
        for frame in mutate(stream.frames):
            receiver.feed(frame)
        receiver.finish()
    assert caught.value.reason is reason, str(caught.value)
    assert receiver._buffer is None and receiver._keys is None


def test_error_message_names_the_values() -> None:
    stream = make_stream(LONG_PROMPT)
    expected = r"layer 0 keys chunk at offset 0 holds 65636 bytes, chunk size is 65536"
    with pytest.raises(KVProtocolError, match=expected):
        run(stream, oversize_data(stream.frames))


@pytest.mark.parametrize("encoding", [WireEncoding.FP8, WireEncoding.INT8])
def test_compressed_stream_round_trips_within_quantization_error(encoding: WireEncoding) -> None:
    stream = make_stream(LONG_PROMPT, encoding=encoding)
    _, received = run(stream)
    for index, (keys, _values) in enumerate(stream.layers):
        error = (received[index][0] - keys).abs().max().item()
        assert 0 < error < 0.2 * keys.abs().max().item()


def test_compressed_stream_without_scales_is_refused() -> None:
    stream = make_stream(5, encoding=WireEncoding.INT8)
    chunk = stream.frames[1]
    assert isinstance(chunk, LayerChunk) and chunk.kind is TensorKind.KEYS
    frames = replace_chunk(0, scales=b"")(stream.frames)
    with pytest.raises(KVProtocolError) as caught:
        run(stream, frames)
    assert caught.value.reason is Reason.BAD_SCALES
