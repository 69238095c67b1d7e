"""The receiving end of a KV data connection: each layer's bytes straight into the KV slot, validated.

After the gRPC stream's Header announced the data connection, `receive_layers` reads one frame per
layer (kv/data_frame.py) in order: the 32-byte header is checked against the transfer and the
receiver's position (transfer ref, layer index, kind, sizes), the tensor bytes are received with
`recv_into` into `KVReceiver.layer_buffers()` (the slot's own memory for `none`; staging for
fp8/int8), the payload checksum of the connection's data version is checked (unless the request
turned it off), and the layer is committed -
usable as soon as it arrived. Any violation raises KVProtocolError with the same reasons as the gRPC
frames (docs/kv-wire.md).
"""

from __future__ import annotations

import socket
import time
from collections.abc import Callable

from hybrid_workers.enums import WireEncoding
from hybrid_workers.kv.data_frame import (
    DATA_VERSION,
    KIND_KEYS_VALUES,
    LAYER,
    LayerFrame,
    checksum_name,
    parse_layer_header,
    payload_checksum,
)
from hybrid_workers.kv.data_socket import recv_exact
from hybrid_workers.kv.errors import KVProtocolError, Reason
from hybrid_workers.kv.layer_bytes import byte_parts
from hybrid_workers.kv.receiver import KVReceiver


def receive_layers(
    sock: socket.socket,
    receiver: KVReceiver,
    ref: int,
    poll: Callable[[int], None],
    version: int = DATA_VERSION,
) -> list[float]:
    """Receive every remaining layer; per layer, the seconds from its header to its last byte.

    `poll(count)` is called after every receive (0: a socket timeout) and raises to give up;
    `version` is the connection's data version (its payload checksum).
    """
    assert receiver.header is not None
    checksum = payload_checksum(version) if receiver.request.data_checksum else None
    encoding = receiver.header.encoding
    scale_bytes = 0 if encoding is WireEncoding.NONE else 4 * receiver.model.num_kv_heads
    seconds: list[float] = []
    head = bytearray(LAYER.size)
    while receiver.layer < receiver.model.num_layers:
        recv_exact(sock, memoryview(head), poll, f"layer {receiver.layer}'s frame header")
        started = time.perf_counter()
        frame = parse_layer_header(head)
        keys, values = receiver.layer_buffers()
        _check_frame(frame, receiver, ref, scale_bytes, keys.nbytes)
        scales = bytearray(2 * scale_bytes)
        what = f"layer {frame.layer}"
        # the whole payload in one scatter receive: scales (fp8/int8), then keys and values straight
        # into the KV slot (`none`: the slot's rows, or flat buffers)
        parts = [memoryview(scales), *byte_parts(keys), *byte_parts(values)]
        recv_exact(sock, parts, poll, f"{what}'s payload")
        if checksum is not None and frame.crc32 != checksum(parts):
            receiver.release()
            name = checksum_name(version)
            raise KVProtocolError(Reason.CHECKSUM, f"{what} on the data connection: {name} mismatch")
        receiver.complete_layer(keys, values, bytes(scales[:scale_bytes]), bytes(scales[scale_bytes:]))
        seconds.append(time.perf_counter() - started)
    return seconds


def _check_frame(frame: LayerFrame, receiver: KVReceiver, ref: int, scale_bytes: int, nbytes: int) -> None:
    """The frame must be this transfer's, for the expected layer, with exactly the expected sizes."""
    where = f"data connection: layer {frame.layer} frame"
    expected = receiver.layer
    problem: tuple[Reason, str] | None = None
    if frame.ref != ref:
        problem = (Reason.BAD_FRAME, f"{where} belongs to transfer {frame.ref:08x}, this is {ref:08x}")
    elif frame.layer >= receiver.model.num_layers:
        problem = (Reason.ORDER, f"{where}: layer index out of range 0..{receiver.model.num_layers - 1}")
    elif frame.layer < expected:
        problem = (Reason.DUPLICATE_LAYER, f"{where}: layer {frame.layer} was already received")
    elif frame.layer > expected:
        problem = (Reason.MISSING_LAYER, f"{where} arrived while waiting for layer {expected}")
    elif frame.kind != KIND_KEYS_VALUES:
        problem = (
            Reason.BAD_FRAME,
            f"{where} has kind {frame.kind}, expected {KIND_KEYS_VALUES} (keys+values)",
        )
    elif frame.scale_bytes != scale_bytes:
        problem = (Reason.BAD_SCALES, f"{where}: {frame.scale_bytes} bytes of scales, expected {scale_bytes}")
    elif frame.tensor_bytes < nbytes:
        problem = (
            Reason.TRUNCATED_CHUNK,
            f"{where} holds {frame.tensor_bytes} bytes per tensor, expected {nbytes}",
        )
    elif frame.tensor_bytes > nbytes:
        problem = (
            Reason.OVERSIZE_FRAME,
            f"{where} holds {frame.tensor_bytes} bytes per tensor, expected {nbytes}",
        )
    if problem is not None:
        receiver.release()
        raise KVProtocolError(*problem)
