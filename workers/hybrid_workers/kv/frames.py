"""Domain types of the KV wire: request, Header, LayerChunk, Trailer (protobuf stops at kv/convert.py)."""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from enum import StrEnum

from hybrid_workers.enums import TransferMode, WireEncoding

# The KV wire version (Handshake, PrefillRequest and Header carry it). 2: Handshake and Heartbeat.
PROTOCOL_VERSION = 2
DEFAULT_CHUNK_BYTES = 4 << 20  # 4 MiB: grpcio's sweet spot on loopback (docs/architecture.md)
MIN_CHUNK_BYTES = 64 << 10
MAX_CHUNK_BYTES = 16 << 20
# gRPC message limit: a chunk plus the frame's other fields (scales, offsets, checksums).
MESSAGE_HEADROOM_BYTES = 64 << 10
MAX_MESSAGE_BYTES = MAX_CHUNK_BYTES + MESSAGE_HEADROOM_BYTES
# gRPC channel/server options of both ends: messages up to the largest chunk plus headroom.
GRPC_OPTIONS = [
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
]


class TensorKind(StrEnum):
    """Which half of a layer's cache a chunk carries."""

    KEYS = "keys"
    VALUES = "values"


def checksum(data: bytes | memoryview, scales: bytes = b"") -> int:
    """zlib.crc32 over `scales` then `data` (the value LayerChunk.crc32 carries)."""
    return zlib.crc32(data, zlib.crc32(scales))


def check_chunk_bytes(value: int) -> int:
    """`value` if it is an allowed chunk size, else ValueError naming the range."""
    if not MIN_CHUNK_BYTES <= value <= MAX_CHUNK_BYTES:
        raise ValueError(
            f"chunk size {value} bytes out of range; "
            f"use {MIN_CHUNK_BYTES} (64 KiB) .. {MAX_CHUNK_BYTES} (16 MiB)"
        )
    return value


@dataclass(frozen=True)
class KVRequest:
    """What the decode worker asks for: a prompt, how to sample its first token, how to send the KV."""

    token_ids: tuple[int, ...]
    temperature: float = 0.0  # 0: greedy
    top_k: int = 0  # 0: off
    top_p: float = 1.0
    seed: int | None = None
    encoding: WireEncoding = WireEncoding.NONE
    mode: TransferMode = TransferMode.LAYERWISE
    expected_fingerprint: str = ""  # non-empty: the prefill worker refuses another model
    chunk_bytes: int = 0  # 0: the prefill worker's default
    request_id: str = ""
    protocol_version: int = PROTOCOL_VERSION
    heartbeat_ms: int = 0  # > 0: the sender sends a Heartbeat after this long without a frame
    transfer_id: bytes = b""  # 16 bytes: layers on the data connection presenting it; b"": gRPC frames
    data_checksum: bool = True  # data connection: crc32 of each layer's payload (frames always carry one)


@dataclass(frozen=True)
class Header:
    """First frame: what follows. Shapes are [batch, kv_heads, seq, head_dim] per layer."""

    protocol_version: int
    request_id: str
    model_fingerprint: str
    model_name: str
    num_layers: int
    keys_shapes: tuple[tuple[int, ...], ...]  # one per layer
    values_shapes: tuple[tuple[int, ...], ...]
    dtype: str  # float32 | bfloat16 | float16
    encoding: WireEncoding
    mode: TransferMode
    chunk_bytes: int
    prompt_tokens: int
    data_connection: bool = False  # layers follow on the data connection (none on the gRPC stream)
    data_host: str = ""  # the data connection's host ("": the one the decode worker dialled)
    data_port: int = 0  # and port


@dataclass(frozen=True)
class LayerChunk:
    """Bytes [offset, offset + len(data)) of one layer's encoded keys or values."""

    layer: int
    kind: TensorKind
    offset: int
    # sender: a view of the tensor; receiver: a view of the message (views of writable memory are unhashable)
    data: bytes | memoryview = field(hash=False)
    crc32: int
    scales: bytes = b""  # fp8/int8 at offset 0: float32 little-endian, one per KV head


@dataclass(frozen=True)
class Trailer:
    """Last frame: the first token and the prefill worker's timings (its own clock, durations only)."""

    first_token: int
    first_logprob: float
    layer_seconds: tuple[float, ...]  # compute time per layer
    layer_done_seconds: tuple[float, ...]  # request arrival -> layer i's K/V final
    queue_seconds: float  # request arrival -> its prefill started
    prefill_seconds: float  # prefill start -> first token sampled
    prefill_start_unix: float
    prefill_end_unix: float
    send_tail_seconds: float  # last layer final -> trailer handed to gRPC
    layer_send_seconds: tuple[float, ...] = ()  # per layer: first byte handed to the transport -> last


@dataclass(frozen=True)
class Heartbeat:
    """A sign of life without KV (the prefill waits in the queue or computes a layer)."""

    queued_ahead: int = 0  # prefills admitted before this one and not finished


Frame = Header | LayerChunk | Trailer
