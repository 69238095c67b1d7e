"""PrefillClient against a misbehaving prefill worker: a real gRPC server sending crafted frames.

Every malformed stream ends in KVProtocolError with its own reason, and the same client then
completes a valid KV transfer from the same server (nothing stuck, nothing leaked into the next call).
"""

from __future__ import annotations

import dataclasses
import gc
import time
import weakref
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest
import torch
from hybrid_workers.decode.prefill_client import PrefillClient
from hybrid_workers.engine import SamplingParams
from hybrid_workers.enums import TransferMode, WireEncoding
from hybrid_workers.kv.chunker import build_header, layer_chunks
from hybrid_workers.kv.convert import frame_to_pb, request_from_pb
from hybrid_workers.kv.errors import KVProtocolError, Reason
from hybrid_workers.kv.frames import (
    GRPC_OPTIONS,
    MIN_CHUNK_BYTES,
    PROTOCOL_VERSION,
    Frame,
    LayerChunk,
    Trailer,
    checksum,
)
from hybrid_workers.kv.proto import kv_pb2
from hybrid_workers.torch_dtypes import dtype_name

GREEDY = SamplingParams(max_tokens=1, temperature=0)
PROMPT = [1, *range(8, 1207)]  # 1200 tokens: 300 KiB per tensor, 5 chunks of 64 KiB
Scenario = Callable[[list[Frame]], list[Frame | bytes]]


def valid_frames(lm, message: kv_pb2.PrefillRequest) -> list[Frame]:
    """What an honest prefill worker of `lm` would send (random K/V: the client cannot tell)."""
    request = request_from_pb(message, WireEncoding.NONE, TransferMode.LAYERWISE)
    shape = (1, lm.num_kv_heads, len(request.token_ids), lm.head_dim)
    frames: list[Frame] = [
        build_header(
            request,
            model_name="fake",
            fingerprint=lm.fingerprint,
            num_layers=lm.num_layers,
            layer_shape=shape,
            dtype=dtype_name(lm.dtype),
            chunk_bytes=MIN_CHUNK_BYTES,
        )
    ]
    for index in range(lm.num_layers):
        keys, values = torch.randn(shape), torch.randn(shape)
        frames.extend(layer_chunks(index, keys, values, request.encoding, MIN_CHUNK_BYTES))
    times = tuple(0.01 * (i + 1) for i in range(lm.num_layers))
    frames.append(Trailer(42, -0.5, times, times, 0.0, 0.05, 1.0, 1.05, 0.0))
    return frames


class FakeWorker:
    """A gRPC server whose Prefill sends what the current scenario makes of a valid stream."""

    def __init__(self, lm) -> None:
        self.lm = lm
        self.scenario: Scenario = list
        self.delay_s = 0.0
        handler = grpc.method_handlers_generic_handler(
            "hybridinference.kv.v1.PrefillWorker",
            {
                "Prefill": grpc.unary_stream_rpc_method_handler(
                    self.prefill,
                    request_deserializer=kv_pb2.PrefillRequest.FromString,
                    response_serializer=lambda raw: raw,  # frames are serialized here, or raw garbage
                )
            },
        )
        self.server = grpc.server(ThreadPoolExecutor(4), options=GRPC_OPTIONS)
        self.server.add_generic_rpc_handlers((handler,))
        self.port = self.server.add_insecure_port("127.0.0.1:0")
        self.server.start()

    def prefill(self, message: kv_pb2.PrefillRequest, context: grpc.ServicerContext) -> Iterator[bytes]:
        time.sleep(self.delay_s)
        for frame in self.scenario(valid_frames(self.lm, message)):
            yield frame if isinstance(frame, bytes) else frame_to_pb(frame).SerializeToString()


@pytest.fixture(scope="module")
def fake(tiny_lm) -> Iterator[FakeWorker]:
    worker = FakeWorker(tiny_lm)
    yield worker
    worker.server.stop(0)


def chunk_indices(frames: list[Frame]) -> list[int]:
    return [i for i, frame in enumerate(frames) if isinstance(frame, LayerChunk)]


def edit_chunk(position: int, **changes: object) -> Scenario:
    """One chunk changed; its checksum recomputed unless `crc32` is among the changes."""

    def scenario(frames: list[Frame]) -> list[Frame | bytes]:
        at = chunk_indices(frames)[position]
        chunk = dataclasses.replace(frames[at], **changes)  # type: ignore[arg-type]
        if "crc32" not in changes:
            chunk = dataclasses.replace(chunk, crc32=checksum(chunk.data, chunk.scales))
        return [*frames[:at], chunk, *frames[at + 1 :]]

    return scenario


def edit_header(**changes: object) -> Scenario:
    return lambda frames: [dataclasses.replace(frames[0], **changes), *frames[1:]]  # type: ignore[arg-type]


def without_layer(layer: int) -> Scenario:
    return lambda frames: [f for f in frames if not (isinstance(f, LayerChunk) and f.layer == layer)]


def layer_twice(layer: int) -> Scenario:
    def scenario(frames: list[Frame]) -> list[Frame | bytes]:
        chunks = [f for f in frames if isinstance(f, LayerChunk) and f.layer == layer]
        at = frames.index(chunks[-1]) + 1
        return [*frames[:at], *chunks, *frames[at:]]

    return scenario


def short_chunk(frames: list[Frame]) -> list[Frame | bytes]:
    chunk = frames[chunk_indices(frames)[2]]
    assert isinstance(chunk, LayerChunk)
    return edit_chunk(2, data=chunk.data[: len(chunk.data) // 2])(frames)


def long_chunk(frames: list[Frame]) -> list[Frame | bytes]:
    chunk = frames[chunk_indices(frames)[0]]
    assert isinstance(chunk, LayerChunk)
    return edit_chunk(0, data=bytes(chunk.data) + b"\0" * 1000)(frames)


def huge_chunk(frames: list[Frame]) -> list[Frame | bytes]:
    return edit_chunk(0, data=bytes(17 << 20))(frames)  # beyond gRPC's message limit (16 MiB + 64 KiB)


def cut_mid_layer(frames: list[Frame]) -> list[Frame | bytes]:
    return frames[: chunk_indices(frames)[12]]  # layer 1, in the middle of its values


MALFORMED: dict[str, tuple[Scenario, Reason]] = {
    "wrong version": (edit_header(protocol_version=PROTOCOL_VERSION + 1), Reason.VERSION),
    "wrong fingerprint": (edit_header(model_fingerprint="0" * 32), Reason.FINGERPRINT),
    "wrong dtype": (edit_header(dtype="bfloat16"), Reason.DTYPE),
    "missing layer": (without_layer(2), Reason.MISSING_LAYER),
    "duplicate layer": (layer_twice(1), Reason.DUPLICATE_LAYER),
    "truncated chunk": (short_chunk, Reason.TRUNCATED_CHUNK),
    "bad checksum": (edit_chunk(7, crc32=1), Reason.CHECKSUM),
    "oversize frame": (long_chunk, Reason.OVERSIZE_FRAME),
    "frame over the gRPC limit": (huge_chunk, Reason.OVERSIZE_FRAME),
    "stream cut mid-layer": (cut_mid_layer, Reason.STREAM_ENDED),
    "no trailer": (lambda frames: frames[:-1], Reason.STREAM_ENDED),
    "garbage bytes": (lambda frames: [frames[0], b"\xff\xff\xff\xff"], Reason.BAD_FRAME),
    "empty frame": (lambda frames: [frames[0], b""], Reason.BAD_FRAME),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_stream_gives_its_reason_then_the_client_works_again(tiny_lm, fake, case: str) -> None:
    scenario, reason = MALFORMED[case]
    with PrefillClient(f"127.0.0.1:{fake.port}", tiny_lm, timeout_s=20) as client:
        fake.scenario = scenario
        with pytest.raises(KVProtocolError) as caught:
            client.prefill(PROMPT, GREEDY)
        assert caught.value.reason is reason, str(caught.value)
        fake.scenario = list
        remote = client.prefill(PROMPT, GREEDY)
    assert remote.first_token == 42 and remote.cache.get_seq_length() == len(PROMPT)


def test_slow_worker_times_out(tiny_lm, fake) -> None:
    fake.delay_s = 1.0
    try:
        with (
            PrefillClient(f"127.0.0.1:{fake.port}", tiny_lm, timeout_s=0.2) as client,
            pytest.raises(KVProtocolError) as caught,
        ):
            client.prefill(PROMPT, GREEDY)
    finally:
        fake.delay_s = 0.0
    assert caught.value.reason is Reason.TIMEOUT


def test_nobody_listening_is_a_transport_error(tiny_lm, fake) -> None:
    with PrefillClient("127.0.0.1:1", tiny_lm, timeout_s=5) as client:
        with pytest.raises(KVProtocolError, match=r"127\.0\.0\.1:1\b") as caught:
            client.prefill(PROMPT, GREEDY)
        assert caught.value.reason is Reason.TRANSPORT
        with pytest.raises(KVProtocolError):
            client.health()


def test_a_failed_kv_transfer_leaves_no_layer_behind(tiny_lm, fake, monkeypatch: pytest.MonkeyPatch) -> None:
    from hybrid_workers.engine import cache as engine_cache

    held: list[weakref.ref] = []
    original = engine_cache.CacheBuilder.add_layer

    def add_layer(self, index: int, keys: torch.Tensor, values: torch.Tensor) -> None:
        held.extend((weakref.ref(keys), weakref.ref(values)))
        original(self, index, keys, values)

    monkeypatch.setattr(engine_cache.CacheBuilder, "add_layer", add_layer)
    fake.scenario = without_layer(3)  # layers 0-2 arrive and are stored, then the stream breaks
    try:
        with PrefillClient(f"127.0.0.1:{fake.port}", tiny_lm) as client, pytest.raises(KVProtocolError):
            client.prefill(PROMPT, GREEDY)
    finally:
        fake.scenario = list
    gc.collect()
    assert len(held) == 6 and all(ref() is None for ref in held)


@pytest.mark.parametrize(("option", "value"), [("encoding", "zstd"), ("mode", "streaming")])
def test_unknown_client_options_are_named(tiny_lm, option: str, value: str) -> None:
    from hybrid_workers.errors import UserError

    with pytest.raises(UserError, match=f"'{value}': use one of"):
        PrefillClient("127.0.0.1:1", tiny_lm, **{option: value})
