"""The data connection's framing end to end over a socket pair: valid layers land bit-exact (in the KV
slot for `none`), and every malformed stream fails with its own reason and frees the layer in flight."""

from __future__ import annotations

import contextlib
import dataclasses
import socket
import struct
import threading
import zlib
from collections.abc import Callable

import pytest
import torch
from hybrid_workers.engine.kv_slot import TorchKVSlot
from hybrid_workers.enums import WireEncoding
from hybrid_workers.kv.compression import EncodedTensor, encode
from hybrid_workers.kv.data_frame import (
    DATA_VERSION,
    HELLO,
    LAYER,
    frame_parts,
    hello,
    layer_header,
    negotiate,
    parse_hello,
    payload_checksum,
    send_layers,
    transfer_ref,
)
from hybrid_workers.kv.data_receiver import receive_layers
from hybrid_workers.kv.data_socket import receive_blocking, send_all
from hybrid_workers.kv.errors import KVProtocolError, Reason
from hybrid_workers.kv.frames import Header
from hybrid_workers.kv.receiver import KVReceiver
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from kv_stream_builder import LONG_PROMPT, MODEL, Stream, make_stream

TRANSFER_ID = bytes(range(16))
REF = transfer_ref(TRANSFER_ID)


def _stream(prompt_tokens: int = 5, encoding: WireEncoding = WireEncoding.NONE) -> Stream:
    stream = make_stream(prompt_tokens, encoding=encoding)
    stream.request = dataclasses.replace(stream.request, transfer_id=TRANSFER_ID)
    header = stream.frames[0]
    assert isinstance(header, Header)
    stream.frames = [dataclasses.replace(header, data_connection=True, data_port=1), stream.frames[-1]]
    return stream


def _run(
    stream: Stream, write: Callable[[socket.socket], None], destination=None, version: int = DATA_VERSION
) -> tuple[KVReceiver, dict]:
    """Feed the header, let `write` play the prefill side on one end, receive on the other (set up as
    the decode worker's data connection: blocking, kernel receive timeout, whole-tensor receives)."""
    handed: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}
    receiver = KVReceiver(MODEL, stream.request, lambda i, k, v: handed.__setitem__(i, (k, v)), destination)
    receiver.feed(stream.frames[0])
    near, far = socket.socketpair()
    receive_blocking(near, 0.05)

    def play() -> None:
        with far, contextlib.suppress(OSError):  # the receiver may hang up first (it refused the stream)
            write(far)

    writer = threading.Thread(target=play)
    writer.start()
    polls = 0

    def poll(_count: int) -> None:
        nonlocal polls
        polls += 1
        if polls > 2000:  # hang guard: ~100 s of timeouts
            raise AssertionError("receive_layers did not finish")

    try:
        receive_layers(near, receiver, REF, poll, version)
    finally:
        near.close()
        writer.join(timeout=30)
    return receiver, handed


def _encoded(stream: Stream, index: int) -> tuple[EncodedTensor, EncodedTensor]:
    keys, values = stream.layers[index]
    return encode(keys, stream.request.encoding), encode(values, stream.request.encoding)


def _valid(stream: Stream) -> Callable[[socket.socket], None]:
    def write(sock: socket.socket) -> None:
        for index in range(MODEL.num_layers):
            send_layers(sock, REF, [(index, *_encoded(stream, index))])

    return write


@pytest.mark.parametrize("prompt_tokens", [1, LONG_PROMPT])
def test_layers_arrive_bit_exact_and_the_trailer_follows(prompt_tokens: int) -> None:
    stream = _stream(prompt_tokens)
    receiver, handed = _run(stream, _valid(stream))
    assert sorted(handed) == list(range(MODEL.num_layers))
    for index, (keys, values) in enumerate(stream.layers):
        assert torch.equal(handed[index][0], keys) and torch.equal(handed[index][1], values)
    receiver.feed(stream.frames[-1])
    assert receiver.finish() is stream.frames[-1]
    assert receiver.wire_bytes == 2 * MODEL.num_layers * keys.numel() * 4


def test_uncompressed_bytes_are_received_straight_into_the_kv_slot() -> None:
    stream = _stream(LONG_PROMPT)
    slot = TorchKVSlot(
        MODEL.num_layers, MODEL.num_kv_heads, MODEL.head_dim, LONG_PROMPT, LONG_PROMPT + 4,
        MODEL.dtype, torch.device("cpu"),
    )  # fmt: skip
    targets = {i: slot.layer_target(i) for i in range(MODEL.num_layers)}
    _receiver, handed = _run(stream, _valid(stream), destination=slot)
    assert slot.complete
    for index, (keys, values) in enumerate(stream.layers):
        got_keys, got_values = slot.layer_kv(index, LONG_PROMPT)
        assert torch.equal(got_keys, keys) and torch.equal(got_values, values)
        # the receiver wrote into the slot's own target buffers (no buffer of its own in between)
        assert handed[index][0].data_ptr() == targets[index].keys.ctypes.data


@pytest.mark.parametrize("encoding", [WireEncoding.FP8, WireEncoding.INT8])
def test_compressed_layers_travel_with_their_scales(encoding: WireEncoding) -> None:
    stream = _stream(LONG_PROMPT, encoding)
    _receiver, handed = _run(stream, _valid(stream))
    for index, (keys, _values) in enumerate(stream.layers):
        error = (handed[index][0] - keys).abs().max().item()
        assert 0 < error < 0.2 * keys.abs().max().item()


def _layers_then(tamper: Callable[[bytes, list[memoryview]], list[bytes | memoryview]], at: int = 1):
    """A writer sending valid layers, with layer `at`'s header and parts replaced by `tamper`'s."""

    def factory(stream: Stream) -> Callable[[socket.socket], None]:
        def write(sock: socket.socket) -> None:
            for index in range(MODEL.num_layers):
                keys, values = _encoded(stream, index)
                head = layer_header(REF, index, keys, values)
                views = (memoryview(keys.scales), memoryview(values.scales), keys.data.data, values.data.data)
                parts = [v.cast("B") for v in views if v.nbytes]
                send_all(sock, tamper(head, parts) if index == at else [head, *parts])
                if index == at:
                    return

        return write

    return factory


def _with_fields(head: bytes, **changes: int) -> bytes:
    """`head` with some fields replaced and its header crc32 recomputed (a well-formed lie)."""
    names = ("magic", "ref", "layer", "kind", "scale_bytes", "tensor_bytes", "crc32", "head_crc")
    fields = dict(zip(names, LAYER.unpack(head), strict=True))
    fields.update(changes)
    body = struct.pack("<4sIIHHQI", *(fields[n] for n in names[:-1]))
    return body + struct.pack("<I", zlib.crc32(body))


def _flip(part: memoryview) -> bytes:
    raw = bytearray(part)
    raw[len(raw) // 2] ^= 0xFF
    return bytes(raw)


MALFORMED: dict[str, tuple[Reason, Callable[[Stream], Callable[[socket.socket], None]]]] = {
    "another transfer": (Reason.BAD_FRAME, _layers_then(lambda h, p: [_with_fields(h, ref=REF ^ 1), *p])),
    "bad magic": (Reason.BAD_FRAME, _layers_then(lambda h, p: [b"XXXX" + h[4:], *p])),
    "header bit flip": (Reason.CHECKSUM, _layers_then(lambda h, p: [h[:9] + bytes([h[9] ^ 1]) + h[10:], *p])),
    "payload bit flip": (Reason.CHECKSUM, _layers_then(lambda h, p: [h, *p[:-1], _flip(p[-1])])),
    "layer skipped": (Reason.MISSING_LAYER, _layers_then(lambda h, p: [_with_fields(h, layer=2), *p])),
    "layer repeated": (Reason.DUPLICATE_LAYER, _layers_then(lambda h, p: [_with_fields(h, layer=0), *p])),
    "layer out of range": (Reason.ORDER, _layers_then(lambda h, p: [_with_fields(h, layer=99), *p])),
    "keys only": (Reason.BAD_FRAME, _layers_then(lambda h, p: [_with_fields(h, kind=1), *p])),
    "scales with none": (Reason.BAD_SCALES, _layers_then(lambda h, p: [_with_fields(h, scale_bytes=8), *p])),
    "short length": (
        Reason.TRUNCATED_CHUNK,
        _layers_then(lambda h, p: [_with_fields(h, tensor_bytes=LAYER.unpack(h)[5] - 4), *p]),
    ),
    "long length": (
        Reason.OVERSIZE_FRAME,
        _layers_then(lambda h, p: [_with_fields(h, tensor_bytes=LAYER.unpack(h)[5] + 4), *p]),
    ),
    "cut in the payload": (Reason.TRUNCATED_CHUNK, _layers_then(lambda h, p: [h, p[0][:100]])),
    "cut in the header": (Reason.TRUNCATED_CHUNK, _layers_then(lambda h, p: [h[:20]])),
    "closed before any layer": (Reason.TRUNCATED_CHUNK, _layers_then(lambda h, p: [], at=0)),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_each_malformed_stream_has_its_reason_and_frees_the_layer_in_flight(case: str) -> None:
    reason, writer = MALFORMED[case]
    stream = _stream(LONG_PROMPT)
    with pytest.raises(KVProtocolError) as raised:
        _run(stream, writer(stream))
    assert raised.value.reason is reason, raised.value


def test_the_message_names_both_transfers() -> None:
    stream = _stream()
    with pytest.raises(KVProtocolError, match=f"belongs to transfer {REF ^ 1:08x}, this is {REF:08x}"):
        _run(stream, MALFORMED["another transfer"][1](stream))


def test_a_header_announcing_a_data_connection_nobody_opened_is_refused() -> None:
    stream = _stream()
    request = dataclasses.replace(stream.request, transfer_id=b"")
    receiver = KVReceiver(MODEL, request, lambda *_: None)
    with pytest.raises(KVProtocolError, match="asked for none") as raised:
        receiver.feed(stream.frames[0])
    assert raised.value.reason is Reason.BAD_HEADER


def test_a_layer_chunk_on_the_grpc_stream_after_a_data_header_is_out_of_order() -> None:
    stream = _stream()
    chunk = make_stream(5).frames[1]
    receiver = KVReceiver(MODEL, stream.request, lambda *_: None)
    receiver.feed(stream.frames[0])
    with pytest.raises(KVProtocolError, match="announced the data connection") as raised:
        receiver.feed(chunk)
    assert raised.value.reason is Reason.ORDER


def test_the_hello_round_trips_and_refuses_strangers() -> None:
    assert parse_hello(hello(TRANSFER_ID)) == (TRANSFER_ID, DATA_VERSION)
    assert parse_hello(hello(TRANSFER_ID, 1)) == (TRANSFER_ID, 1)  # an older decode worker's hello
    with pytest.raises(ValueError, match="not a KV data connection"):
        parse_hello(b"GET / HTTP/1.1\r\n\r\n\0\0\0\0\0\0")
    for version in (0, 9):
        with pytest.raises(ValueError, match=f"version {version}, this worker speaks 1..3"):
            parse_hello(HELLO.pack(b"HIKD", version, TRANSFER_ID))


def test_the_data_version_is_the_highest_both_sides_speak() -> None:
    assert negotiate(DATA_VERSION) == DATA_VERSION == 3
    assert negotiate(2) == 2  # a peer of the previous release: CRC-32C
    assert negotiate(1) == 1  # an older peer: CRC-32
    assert negotiate(7) == DATA_VERSION  # a newer peer speaks ours
    assert negotiate(0) == 0  # no data connection at all


def test_each_data_version_checks_its_own_checksum() -> None:
    parts = (b"", b"", b"123456789", b"")  # the standard check input of both CRCs
    assert payload_checksum(1)(parts) == zlib.crc32(b"123456789") == 0xCBF43926
    assert payload_checksum(2)(parts) == 0xE3069283  # CRC-32C's check value
    assert payload_checksum(3)(parts) == 0xCBF43926  # CRC-32 again, through zlib-ng
    chained = (b"scales", b"", bytes(range(256)) * 4099, b"values")  # zlib-ng's folded path: long input
    assert payload_checksum(3)(chained) == zlib.crc32(b"".join(chained)) == payload_checksum(1)(chained)


@pytest.mark.parametrize("version", [1, 2, 3])
def test_layers_of_either_data_version_arrive_bit_exact(version: int) -> None:
    stream = _stream(LONG_PROMPT)

    def write(sock: socket.socket) -> None:
        for index in range(MODEL.num_layers):
            send_layers(sock, REF, [(index, *_encoded(stream, index))], payload_checksum(version))

    _receiver, handed = _run(stream, write, version=version)
    for index, (keys, values) in enumerate(stream.layers):
        assert torch.equal(handed[index][0], keys) and torch.equal(handed[index][1], values)


@pytest.mark.parametrize(("sent", "said", "name"), [(1, 2, "crc32c"), (3, 2, "crc32c"), (2, 3, "crc32")])
def test_a_frame_checksummed_for_the_other_data_version_is_refused(sent: int, said: int, name: str) -> None:
    stream = _stream(LONG_PROMPT)

    def write(sock: socket.socket) -> None:  # checksums as `sent` on a connection that said `said`
        for index in range(MODEL.num_layers):
            send_layers(sock, REF, [(index, *_encoded(stream, index))], payload_checksum(sent))

    with pytest.raises(KVProtocolError, match=f"{name} mismatch") as raised:
        _run(stream, write, version=said)
    assert raised.value.reason is Reason.CHECKSUM


def test_data_versions_1_and_3_put_the_same_bytes_on_the_wire() -> None:
    stream = _stream(LONG_PROMPT)
    layers = [(index, *_encoded(stream, index)) for index in range(MODEL.num_layers)]
    frames = {
        version: b"".join(
            bytes(part) for layer in layers for part in frame_parts(REF, *layer, payload_checksum(version))
        )
        for version in (1, 3)
    }
    assert frames[1] == frames[3]  # version 3 only promises the peer computes CRC-32 fast


def test_layers_final_together_go_out_in_one_gather_write() -> None:
    stream = _stream(LONG_PROMPT)
    calls: list[int] = []

    class Counting:  # the real socket, its gather writes counted
        def __init__(self, sock: socket.socket) -> None:
            self.sock = sock

        def sendmsg(self, buffers) -> int:
            calls.append(len(buffers))
            return self.sock.sendmsg(buffers)

    def write(sock: socket.socket) -> None:
        layers = [(index, *_encoded(stream, index)) for index in range(MODEL.num_layers)]
        sizes = send_layers(Counting(sock), REF, layers)  # type: ignore[arg-type]  # duck-typed socket
        assert sizes == [2 * _encoded(stream, 0)[0].data.nbytes] * MODEL.num_layers

    _receiver, handed = _run(stream, write)
    for index, (keys, values) in enumerate(stream.layers):
        assert torch.equal(handed[index][0], keys) and torch.equal(handed[index][1], values)
    assert len(calls) == 1 and calls[0] == 3 * MODEL.num_layers  # header, keys, values per layer


def test_a_gather_write_longer_than_the_iovec_limit_is_split() -> None:
    left, right = socket.socketpair()
    pieces = [bytes([index % 251]) * (index % 7 + 1) for index in range(1300)]  # 1300 buffers > IOV_MAX
    calls: list[int] = []

    class Counting:
        def sendmsg(self, buffers) -> int:
            calls.append(len(buffers))
            return left.sendmsg(buffers)

    with left, right:
        send_all(Counting(), pieces)  # type: ignore[arg-type]  # duck-typed socket
        left.shutdown(socket.SHUT_WR)
        received = b"".join(iter(lambda: right.recv(65536), b""))
    assert received == b"".join(pieces)
    assert max(calls) <= 512 and len(calls) >= 3


@st.composite
def _data_streams(draw: st.DrawFn) -> bytes:
    """Bytes a broken or hostile peer might send: a valid first frame cut anywhere, mutated, then junk."""
    stream = STREAMS[draw(st.sampled_from(sorted(STREAMS)))]
    keys, values = _encoded(stream, 0)
    head = layer_header(REF, 0, keys, values)
    if draw(st.booleans()):
        head = _with_fields(
            head,
            **{
                draw(st.sampled_from(["ref", "layer", "kind", "scale_bytes", "tensor_bytes", "crc32"])): draw(
                    st.integers(0, 2**16 - 1)
                )
            },
        )
    frame = head + keys.scales + values.scales + bytes(keys.data) + bytes(values.data)
    return frame[: draw(st.integers(0, len(frame)))] + draw(st.binary(max_size=200))


STREAMS = {encoding.value: _stream(7, encoding) for encoding in WireEncoding}


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(_data_streams())
def test_arbitrary_data_connection_bytes_raise_only_protocol_errors(raw: bytes) -> None:
    stream = STREAMS[WireEncoding.NONE.value]  # fp8/int8 frames to it: scales where none belong
    with pytest.raises(KVProtocolError):
        _run(stream, lambda sock: sock.sendall(raw))
