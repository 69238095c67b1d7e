"""kv.wire: the one-copy chunk encoding is protobuf's encoding, and parsing agrees with protobuf."""

from __future__ import annotations

import pytest
import torch
from hybrid_workers.enums import WireEncoding
from hybrid_workers.kv.chunker import layer_chunks
from hybrid_workers.kv.convert import frame_from_pb, frame_to_pb
from hybrid_workers.kv.errors import KVProtocolError, Reason
from hybrid_workers.kv.proto import kv_pb2
from hybrid_workers.kv.wire import encode_chunk, parse, serialize
from hypothesis import given, settings
from hypothesis import strategies as st
from kv_stream_builder import make_stream

CHUNKS = [
    chunk
    for encoding in WireEncoding
    for chunk in layer_chunks(5, torch.randn(1, 2, 700, 16), torch.randn(1, 2, 700, 16), encoding, 64 << 10)
]
# One whole small chunk (32 data bytes, with scales) for the corruption property.
_TINY = torch.randn(1, 2, 2, 2)  # [batch, kv_heads, seq, head_dim]
SMALL = encode_chunk(next(layer_chunks(1, _TINY, _TINY, WireEncoding.INT8, 1 << 16)))
OVERLONG_VARINT = b"\x12" + b"\x80" * 10 + b"\x01"


@pytest.mark.parametrize("index", range(0, len(CHUNKS), 3))
def test_encoded_chunk_is_what_protobuf_reads(index: int) -> None:
    chunk = CHUNKS[index]
    assert frame_from_pb(kv_pb2.Frame.FromString(encode_chunk(chunk))) == chunk


@pytest.mark.parametrize("index", range(0, len(CHUNKS), 3))
def test_parse_reads_protobuf_serialized_chunks_and_our_own(index: int) -> None:
    chunk = CHUNKS[index]
    assert parse(frame_to_pb(chunk).SerializeToString()) == chunk
    assert parse(encode_chunk(chunk)) == chunk


def test_parse_takes_layer_data_without_copying() -> None:
    raw = encode_chunk(CHUNKS[0])
    data = parse(raw).data
    assert isinstance(data, memoryview) and data.obj is raw


def test_header_and_trailer_go_through_protobuf() -> None:
    stream = make_stream(4)
    for frame in (stream.frames[0], stream.frames[-1]):
        assert parse(serialize(frame)) == frame


@pytest.mark.parametrize("raw", [b"\xff\xff\xff", b"\x12\x05\x08", OVERLONG_VARINT])
def test_undecodable_bytes_are_a_bad_frame(raw: bytes) -> None:
    with pytest.raises(KVProtocolError) as caught:
        parse(raw)
    assert caught.value.reason is Reason.BAD_FRAME


@settings(max_examples=400, deadline=None)
@given(st.integers(0, len(SMALL)), st.binary(max_size=6), st.binary(max_size=8))
def test_corrupted_chunks_parse_exactly_like_protobuf_or_fail_cleanly(
    at: int, patch: bytes, tail: bytes
) -> None:
    raw = SMALL[:at] + patch + SMALL[at + len(patch) :] + tail
    try:
        frame = parse(raw)
    except KVProtocolError:
        return
    try:
        expected = frame_from_pb(kv_pb2.Frame.FromString(raw))
    except Exception:
        pytest.fail(f"parse accepted {raw!r}, which protobuf refuses")
    assert frame == expected
