"""Frame <-> serialized bytes with one copy per layer chunk (protobuf stays the format and the fallback).

Layer chunks are almost all of the bytes. Building a protobuf message and serializing it copies the
tensor bytes twice, and parsing one copies them again; here the sender writes the exact protobuf
encoding of `Frame{layer: LayerChunk{...}}` around a view of the tensor (one copy, into the message
bytes), and the receiver reads the chunk's fields and takes `data` as a zero-copy memoryview.
Anything that is not a canonical layer chunk (header, trailer, or a peer's unusual but valid
encoding) goes through the generated protobuf code, so both ends stay wire-compatible with any
protobuf implementation of kv.proto.
"""

from __future__ import annotations

from google.protobuf.message import DecodeError

from hybrid_workers.kv.convert import frame_from_pb, frame_to_pb
from hybrid_workers.kv.errors import KVProtocolError, Reason
from hybrid_workers.kv.frames import Frame, Heartbeat, LayerChunk, TensorKind
from hybrid_workers.kv.proto import kv_pb2

_FRAME_LAYER_TAG = 0x12  # Frame.layer: field 2, length-delimited
_KIND_NUMBERS = {TensorKind.KEYS: kv_pb2.TENSOR_KIND_KEYS, TensorKind.VALUES: kv_pb2.TENSOR_KIND_VALUES}
_KINDS: dict[int, TensorKind] = {number: kind for kind, number in _KIND_NUMBERS.items()}
# LayerChunk fields in wire order: (tag byte, name); varints 1-4, bytes 5-6.
_VARINT_TAGS = {0x08: "layer", 0x10: "kind", 0x18: "offset", 0x20: "crc32"}
_SCALES_TAG, _DATA_TAG = 0x2A, 0x32


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        low, value = value & 0x7F, value >> 7
        if not value:
            out.append(low)
            return bytes(out)
        out.append(low | 0x80)


def serialize(frame: Frame | Heartbeat | bytes) -> bytes:
    """The protobuf bytes of a Frame (gRPC's response serializer; bytes pass through unchanged)."""
    if isinstance(frame, bytes):
        return frame
    if isinstance(frame, LayerChunk):
        return encode_chunk(frame)
    return frame_to_pb(frame).SerializeToString()


def encode_chunk(chunk: LayerChunk) -> bytes:
    """`Frame{layer: chunk}` in protobuf encoding, copying `chunk.data` exactly once."""
    fields = b"".join(
        (
            b"\x08" + _varint(chunk.layer),
            b"\x10" + _varint(_KIND_NUMBERS[chunk.kind]),
            b"\x18" + _varint(chunk.offset),
            b"\x20" + _varint(chunk.crc32),
            b"\x2a" + _varint(len(chunk.scales)) + chunk.scales if chunk.scales else b"",
            b"\x32" + _varint(len(chunk.data)),
        )
    )
    body_length = len(fields) + len(chunk.data)
    return b"".join((bytes([_FRAME_LAYER_TAG]), _varint(body_length), fields, chunk.data))


def parse(raw: bytes) -> Frame | Heartbeat:
    """The Frame in `raw` (gRPC's response bytes); KVProtocolError(BAD_FRAME) when it does not decode.

    A Heartbeat carries no KV: the caller notes the sign of life and does not feed it to the receiver.
    """
    chunk = _fast_chunk(raw)
    if chunk is not None:
        return chunk
    try:
        message = kv_pb2.Frame.FromString(raw)
    except DecodeError as exc:
        raise KVProtocolError(
            Reason.BAD_FRAME, f"{len(raw)} bytes that do not decode as a Frame: {exc}"
        ) from None
    return frame_from_pb(message)


def _read_varint(view: memoryview, at: int) -> tuple[int, int]:
    """(value, position after it); IndexError/ValueError for a truncated or overlong varint."""
    value = shift = 0
    while True:
        byte = view[at]
        at += 1
        value |= (byte & 0x7F) << shift
        if not byte & 0x80:
            return value, at
        shift += 7
        if shift > 63:
            raise ValueError("varint longer than 64 bits")


def _fast_chunk(raw: bytes) -> LayerChunk | None:
    """A canonical layer chunk read without copying `data`; None when `raw` is anything else."""
    view = memoryview(raw)
    if len(view) < 2 or view[0] != _FRAME_LAYER_TAG:
        return None
    try:
        length, at = _read_varint(view, 1)
        if at + length != len(view):
            return None
        return _chunk_fields(view, at)
    except (IndexError, ValueError):
        return None


def _chunk_fields(view: memoryview, at: int) -> LayerChunk | None:
    values: dict[str, int] = {}
    scales: bytes = b""
    last_tag = 0
    while at < len(view):
        tag = view[at]
        if tag <= last_tag:
            return None  # not canonical order: let protobuf decide
        last_tag = tag
        if tag in _VARINT_TAGS:
            values[_VARINT_TAGS[tag]], at = _read_varint(view, at + 1)
        elif tag == _SCALES_TAG:
            size, at = _read_varint(view, at + 1)
            if at + size > len(view):
                return None  # runs past the message: protobuf reports it
            scales, at = bytes(view[at : at + size]), at + size
        elif tag == _DATA_TAG:
            size, at = _read_varint(view, at + 1)
            if at + size != len(view):
                return None
            return _chunk(values, scales, view[at:])
        else:
            return None
    return _chunk(values, scales, view[at:at])


def _chunk(values: dict[str, int], scales: bytes, data: memoryview) -> LayerChunk | None:
    kind = _KINDS.get(values.get("kind", 0))
    if kind is None or values.get("crc32", 0) >= 1 << 32 or values.get("layer", 0) >= 1 << 32:
        return None  # protobuf's own checks and messages apply
    return LayerChunk(
        layer=values.get("layer", 0),
        kind=kind,
        offset=values.get("offset", 0),
        data=data,  # type: ignore[arg-type]  # a zero-copy view of the message bytes
        crc32=values.get("crc32", 0),
        scales=scales,
    )
