"""Framing of the KV data connection: a hello naming the transfer, then one header + payload per layer.

The data connection (docs/kv-wire.md "Data connection") is a plain TCP (or TLS) stream beside the
gRPC control stream of one Prefill call. The decode worker opens it and sends a `HELLO`; the prefill
worker then writes each layer as one `LAYER` header followed by the payload, in one system call:

    HELLO (24 bytes)  magic b"HIKD", data version (u32), transfer id (16 bytes)
    LAYER (32 bytes)  magic b"HIKL", transfer ref (u32), layer (u32), kind (u16, 3: keys+values),
                      scale bytes per tensor (u16), tensor bytes (u64, each of keys and values),
                      crc32 of the payload (u32), crc32 of this header's first 28 bytes (u32)
    payload           keys' scales, values' scales (fp8/int8 only), keys' bytes, values' bytes

All integers little-endian. The transfer ref is the transfer id's first four bytes (little-endian):
a frame that names another transfer is refused. Tensor bytes are the wire encoding of
kv/compression.py, exactly as in a LayerChunk; the payload crc32 chains over the four parts in order
(0, unchecked, when the request turned the data checksum off: under TLS, or on a trusted link).
"""

from __future__ import annotations

import socket
import ssl
import struct
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from hybrid_workers.kv.compression import EncodedTensor
from hybrid_workers.kv.errors import KVProtocolError, Reason

DATA_VERSION = 1  # the framing below; the handshake's data_version fields carry it
TRANSFER_ID_BYTES = 16
HELLO = struct.Struct("<4sI16s")
LAYER = struct.Struct("<4sIIHHQII")
HELLO_MAGIC, LAYER_MAGIC = b"HIKD", b"HIKL"
KIND_KEYS_VALUES = 3  # one frame carries a layer's keys then its values (bit 0: keys, bit 1: values)
_HEADER_CRC_SPAN = LAYER.size - 4


def transfer_ref(transfer_id: bytes) -> int:
    """The u32 every layer frame of a transfer carries: the id's first four bytes, little-endian."""
    return int.from_bytes(transfer_id[:4], "little")


def hello(transfer_id: bytes) -> bytes:
    """The first bytes the decode worker sends on a new data connection."""
    return HELLO.pack(HELLO_MAGIC, DATA_VERSION, transfer_id)


def parse_hello(raw: bytes) -> bytes:
    """The transfer id of a hello; ValueError naming what is wrong (magic, version, length)."""
    if len(raw) != HELLO.size:
        raise ValueError(f"hello of {len(raw)} bytes, expected {HELLO.size}")
    magic, version, transfer_id = HELLO.unpack(raw)
    if magic != HELLO_MAGIC:
        raise ValueError(f"hello starts with {magic!r}, expected {HELLO_MAGIC!r}: not a KV data connection")
    if version != DATA_VERSION:
        raise ValueError(f"data connection version {version}, this worker speaks {DATA_VERSION}")
    return bytes(transfer_id)


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
    ref: int, layer: int, keys: EncodedTensor, values: EncodedTensor, checksum: bool = True
) -> bytes:
    """The 32-byte header of one layer's frame (the payload crc32 computed here; 0 without `checksum`)."""
    crc = 0
    if checksum:
        crc = zlib.crc32(keys.scales)
        for part in (values.scales, keys.data.data, values.data.data):
            crc = zlib.crc32(part, crc)  # releases the GIL on large buffers
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


def send_layer(
    sock: socket.socket,
    ref: int,
    layer: int,
    keys: EncodedTensor,
    values: EncodedTensor,
    checksum: bool = True,
) -> int:
    """Write one layer's frame from the tensors' own memory; returns the payload bytes (scales included).

    A plain socket gets the header and all parts in one `sendmsg` (gather write, interpreter lock
    released); TLS sockets cannot gather, so each part is one `sendall` (SSL_write, lock released).
    """
    views = (memoryview(keys.scales), memoryview(values.scales), keys.data.data, values.data.data)
    parts = [view.cast("B") for view in views if view.nbytes]
    send_all(sock, [layer_header(ref, layer, keys, values, checksum), *parts])
    return sum(part.nbytes for part in parts)


def send_all(sock: socket.socket, buffers: Sequence[bytes | memoryview]) -> None:
    """Send every byte of `buffers` in order: sendmsg (gather) on a plain socket, sendall per part on TLS."""
    if isinstance(sock, ssl.SSLSocket):
        for buffer in buffers:
            sock.sendall(buffer)
        return
    pending = [memoryview(b).cast("B") for b in buffers]
    while pending:
        sent = sock.sendmsg(pending)
        while pending and sent >= pending[0].nbytes:  # drop what went out (partial sends are rare)
            sent -= pending[0].nbytes
            pending.pop(0)
        if pending and sent:
            pending[0] = pending[0][sent:]


def recv_exact(sock: socket.socket, view: memoryview, poll: Callable[[int], None], what: str) -> None:
    """Fill `view` from `sock` (recv_into, no copy); KVProtocolError(TRUNCATED_CHUNK) at end of stream.

    `poll(count)` runs after each receive with the bytes it got, and with 0 after each socket timeout
    (the caller's poll interval): it raises to give up (the caller's stall watch or cancellation).
    """
    got, total = 0, view.nbytes
    while got < total:
        try:
            count = sock.recv_into(view[got:])
        except TimeoutError:
            poll(0)
            continue
        except OSError as exc:  # reset, or TLS broken: the peer is gone
            raise KVProtocolError(
                Reason.TRANSPORT, f"data connection lost after {got} of {total} bytes of {what}: {exc}"
            ) from None
        if count == 0:
            raise KVProtocolError(
                Reason.TRUNCATED_CHUNK, f"data connection closed after {got} of {total} bytes of {what}"
            )
        got += count
        poll(count)
