"""Framing of the KV data connection: a hello naming the transfer, then one header + payload per layer.

The data connection (docs/kv-wire.md "Data connection") is a plain TCP (or TLS) stream beside the
gRPC control stream of one Prefill call. The decode worker opens it and sends a `HELLO`; the prefill
worker then writes each layer as one `LAYER` header followed by the payload, in one system call:

    HELLO (24 bytes)  magic b"HIKD", data version (u32), transfer id (16 bytes)
    LAYER (32 bytes)  magic b"HIKL", transfer ref (u32), layer (u32), kind (u16, 3: keys+values),
                      scale bytes per tensor (u16), tensor bytes (u64, each of keys and values),
                      payload checksum (u32), crc32 of this header's first 28 bytes (u32)
    payload           keys' scales, values' scales (fp8/int8 only), keys' bytes, values' bytes

All integers little-endian. The transfer ref is the transfer id's first four bytes (little-endian):
a frame that names another transfer is refused. Tensor bytes are the wire encoding of
kv/compression.py, exactly as in a LayerChunk; the payload checksum chains over the four parts in
order (0, unchecked, when the request turned the data checksum off: under TLS, or on a trusted link).
It is the one thing the data versions differ in: version 1 uses CRC-32, version 2 CRC-32C (Castagnoli,
SSE4.2 / ARMv8 CRC instructions, ~28 GB/s here), version 3 CRC-32 again - the same bytes on the wire as
version 1, but a version-3 peer promises zlib-ng's folded CRC-32 (PCLMULQDQ / ARMv8 PMULL, ~56 GB/s
here, twice CRC-32C), where a version-1 peer may compute it with the standard library's zlib (~4 GB/s).
This side computes CRC-32 with zlib-ng for either version. The decode worker speaks the highest version
both sides know (`negotiate`) and names it in its hello.
"""

from __future__ import annotations

import socket
import struct
import zlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import crc32c
from zlib_ng import zlib_ng

from hybrid_workers.kv.compression import EncodedTensor
from hybrid_workers.kv.data_socket import send_all
from hybrid_workers.kv.errors import KVProtocolError, Reason

DATA_VERSION = 3  # the newest framing below; the handshake's data_version fields carry it
OLDEST_DATA_VERSION = 1  # CRC-32 payload checksums; still spoken to older peers
CRC32C_VERSION = 2  # the one data version whose payload checksum is CRC-32C (1 and 3: CRC-32)
TRANSFER_ID_BYTES = 16
HELLO = struct.Struct("<4sI16s")
LAYER = struct.Struct("<4sIIHHQII")
HELLO_MAGIC, LAYER_MAGIC = b"HIKD", b"HIKL"
KIND_KEYS_VALUES = 3  # one frame carries a layer's keys then its values (bit 0: keys, bit 1: values)
_HEADER_CRC_SPAN = LAYER.size - 4


def transfer_ref(transfer_id: bytes) -> int:
    """The u32 every layer frame of a transfer carries: the id's first four bytes, little-endian."""
    return int.from_bytes(transfer_id[:4], "little")


def negotiate(theirs: int) -> int:
    """The data version to speak with a peer that speaks up to `theirs` (0: none in common)."""
    return min(theirs, DATA_VERSION) if theirs >= OLDEST_DATA_VERSION else 0


PayloadChecksum = Callable[[Iterable[bytes | bytearray | memoryview]], int]


def _chained(update: Callable[[bytes | bytearray | memoryview, int], int]) -> PayloadChecksum:
    """A payload checksum that runs `update(part, crc)` over the parts in order."""

    def checksum(parts: Iterable[bytes | bytearray | memoryview]) -> int:
        crc = 0
        for part in parts:
            crc = update(part, crc)  # both release the interpreter lock on large buffers
        return crc

    return checksum


_crc32 = _chained(zlib_ng.crc32)  # CRC-32, carry-less multiply (data versions 1 and 3)
_crc32c = _chained(crc32c.crc32c)  # CRC-32C, CRC instructions (data version 2)


def payload_checksum(version: int) -> PayloadChecksum:
    """The payload checksum of data version `version`: CRC-32C (2) or CRC-32 (1, 3)."""
    return _crc32c if version == CRC32C_VERSION else _crc32


def checksum_name(version: int) -> str:
    """What the payload checksum of data version `version` is called in errors and logs."""
    return "crc32c" if version == CRC32C_VERSION else "crc32"


def hello(transfer_id: bytes, version: int = DATA_VERSION) -> bytes:
    """The first bytes the decode worker sends on a new data connection (the negotiated version)."""
    return HELLO.pack(HELLO_MAGIC, version, transfer_id)


def parse_hello(raw: bytes) -> tuple[bytes, int]:
    """The transfer id and data version of a hello; ValueError naming what is wrong."""
    if len(raw) != HELLO.size:
        raise ValueError(f"hello of {len(raw)} bytes, expected {HELLO.size}")
    magic, version, transfer_id = HELLO.unpack(raw)
    if magic != HELLO_MAGIC:
        raise ValueError(f"hello starts with {magic!r}, expected {HELLO_MAGIC!r}: not a KV data connection")
    if not OLDEST_DATA_VERSION <= version <= DATA_VERSION:
        raise ValueError(
            f"data connection version {version}, this worker speaks {OLDEST_DATA_VERSION}..{DATA_VERSION}"
        )
    return bytes(transfer_id), version


@dataclass(frozen=True)
class LayerFrame:
    """A parsed LAYER header: what the payload after it holds."""

    ref: int
    layer: int
    kind: int
    scale_bytes: int  # per tensor; 0 for `none`
    tensor_bytes: int  # each of keys and values
    crc32: int  # of the payload

    @property
    def payload_bytes(self) -> int:
        """Bytes that follow the header."""
        return 2 * (self.scale_bytes + self.tensor_bytes)


def layer_header(
    ref: int,
    layer: int,
    keys: EncodedTensor,
    values: EncodedTensor,
    checksum: PayloadChecksum | None = _crc32,
) -> bytes:
    """The 32-byte header of one layer's frame (the payload checksum computed here; 0 without one)."""
    crc = 0
    if checksum is not None:
        crc = checksum((keys.scales, values.scales, keys.data.data, values.data.data))
    head = struct.pack(
        "<4sIIHHQI", LAYER_MAGIC, ref, layer, KIND_KEYS_VALUES, len(keys.scales), keys.data.nbytes, crc
    )
    return head + struct.pack("<I", zlib.crc32(head))


def parse_layer_header(raw: bytes | bytearray | memoryview) -> LayerFrame:
    """The LayerFrame of a 32-byte header; KVProtocolError(BAD_FRAME) for a bad magic or header crc."""
    magic, ref, layer, kind, scale_bytes, tensor_bytes, crc, head_crc = LAYER.unpack(raw)
    if magic != LAYER_MAGIC:
        raise KVProtocolError(
            Reason.BAD_FRAME, f"data connection: frame starts with {bytes(magic)!r}, expected {LAYER_MAGIC!r}"
        )
    if zlib.crc32(bytes(raw[:_HEADER_CRC_SPAN])) != head_crc:
        raise KVProtocolError(Reason.CHECKSUM, f"data connection: layer {layer} frame header crc32 mismatch")
    return LayerFrame(ref, layer, kind, scale_bytes, tensor_bytes, crc)


def frame_parts(
    ref: int,
    layer: int,
    keys: EncodedTensor,
    values: EncodedTensor,
    checksum: PayloadChecksum | None = _crc32,
) -> list[bytes | memoryview]:
    """One layer's frame as the buffers to write: its header, then the payload parts from the
    tensors' own memory (scales only for fp8/int8)."""
    views = (memoryview(keys.scales), memoryview(values.scales), keys.data.data, values.data.data)
    parts = [view.cast("B") for view in views if view.nbytes]
    return [layer_header(ref, layer, keys, values, checksum), *parts]


def send_layers(
    sock: socket.socket,
    ref: int,
    layers: Sequence[tuple[int, EncodedTensor, EncodedTensor]],
    checksum: PayloadChecksum | None = _crc32,
) -> list[int]:
    """Write the frames of `layers` ((index, keys, values), in order) from the tensors' own memory;
    the payload bytes of each (scales included).

    A plain socket gets every header and part in as few `sendmsg` calls as the platform's iovec limit
    allows (one for up to 100 layers: a gather write, interpreter lock released); TLS sockets cannot
    gather, so each part is one `sendall` (SSL_write, lock released). Layers that are final together
    (a bulk transfer, or a sender that fell behind its compute) thus cost one system call, not one each.
    """
    buffers: list[bytes | memoryview] = []
    sizes = []
    for index, keys, values in layers:
        frame = frame_parts(ref, index, keys, values, checksum)
        buffers += frame
        sizes.append(sum(memoryview(part).nbytes for part in frame[1:]))
    send_all(sock, buffers)
    return sizes
