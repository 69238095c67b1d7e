"""Property: whatever frames a peer sends, the receiver raises KVProtocolError or accepts, never crashes."""

from __future__ import annotations

import contextlib
import dataclasses

from hybrid_workers.enums import WireEncoding
from hybrid_workers.kv.convert import frame_from_pb, frame_to_pb
from hybrid_workers.kv.errors import KVProtocolError
from hybrid_workers.kv.frames import Frame, Header, LayerChunk, TensorKind, Trailer
from hybrid_workers.kv.proto import kv_pb2
from hybrid_workers.kv.receiver import KVReceiver
from hybrid_workers.kv.wire import parse
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kv_stream_builder import MODEL, make_stream

STREAMS = {encoding: make_stream(prompt_tokens=3, encoding=encoding) for encoding in WireEncoding}
VALID_FRAMES = [frame for stream in STREAMS.values() for frame in stream.frames]
small_ints = st.integers(min_value=-3, max_value=70_000)


def mutated(frame: Frame, data: st.DataObject) -> Frame:
    """The frame with one field replaced by an arbitrary value of a plausible type."""
    if isinstance(frame, LayerChunk):
        field, value = data.draw(
            st.sampled_from(
                [
                    ("layer", data.draw(small_ints)),
                    ("offset", data.draw(small_ints)),
                    ("kind", data.draw(st.sampled_from(list(TensorKind)))),
                    ("data", data.draw(st.binary(max_size=400))),
                    ("scales", data.draw(st.binary(max_size=12))),
                    ("crc32", data.draw(st.integers(0, 2**32 - 1))),
                ]
            )
        )
    elif isinstance(frame, Header):
        field, value = data.draw(
            st.sampled_from(
                [
                    ("num_layers", data.draw(small_ints)),
                    ("prompt_tokens", data.draw(small_ints)),
                    ("chunk_bytes", data.draw(small_ints)),
                    ("dtype", data.draw(st.sampled_from(["float32", "bfloat16", "int4", ""]))),
                    ("keys_shapes", ((1, 2, 3, 8),) * data.draw(st.integers(0, 4))),
                    ("encoding", data.draw(st.sampled_from(list(WireEncoding)))),
                ]
            )
        )
    else:
        field, value = data.draw(
            st.sampled_from(
                [
                    ("first_token", data.draw(small_ints)),
                    ("first_logprob", data.draw(st.floats(allow_nan=True))),
                    ("layer_seconds", tuple(data.draw(st.lists(st.floats(), max_size=4)))),
                ]
            )
        )
    return dataclasses.replace(frame, **{field: value})  # type: ignore[arg-type]


@st.composite
def frame_sequences(draw: st.DrawFn) -> tuple[WireEncoding, list[Frame]]:
    encoding = draw(st.sampled_from(list(WireEncoding)))
    valid = STREAMS[encoding].frames
    start = draw(st.sampled_from([valid, []]))
    frames = list(start[: draw(st.integers(0, len(start)))])
    for _ in range(draw(st.integers(0, 8))):
        frame = draw(st.sampled_from(VALID_FRAMES))
        if draw(st.booleans()):
            frame = mutated(frame, draw(st.data()))
        frames.insert(draw(st.integers(0, len(frames))), frame)
    return encoding, frames


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(frame_sequences())
def test_random_frame_sequences_raise_only_protocol_errors(case: tuple[WireEncoding, list[Frame]]) -> None:
    encoding, frames = case
    receiver = KVReceiver(MODEL, STREAMS[encoding].request, lambda i, k, v: None)
    try:
        for frame in frames:
            receiver.feed(frame)
        trailer = receiver.finish()
    except KVProtocolError:
        assert receiver._buffer is None
        return
    assert isinstance(trailer, Trailer) and receiver.layer == MODEL.num_layers


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=200))
def test_arbitrary_wire_bytes_give_a_frame_or_a_protocol_error(raw: bytes) -> None:
    receiver = KVReceiver(MODEL, STREAMS[WireEncoding.NONE].request, lambda i, k, v: None)
    with contextlib.suppress(KVProtocolError):
        receiver.feed(parse(raw))


def test_every_valid_frame_survives_the_protobuf_round_trip() -> None:
    for frame in VALID_FRAMES:
        assert frame_from_pb(kv_pb2.Frame.FromString(frame_to_pb(frame).SerializeToString())) == frame
