"""Loopback A/B of the KV chunk serialization paths over real grpcio (used by kv_bench.py).

Paths, each streaming the same bytes in the same chunks through one gRPC server/channel pair,
interleaved, medians: protobuf messages (frame_to_pb / FromString), kv.wire (one-copy encode,
zero-copy parse) with and without crc32, and raw grpcio with pre-built messages (the ceiling).
Every path but `raw` copies the received bytes into a buffer, as the receiver does.
"""

from __future__ import annotations

import os
import statistics
import time
import zlib
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor

import grpc
import numpy as np
from hybrid_workers.kv.convert import frame_from_pb, frame_to_pb
from hybrid_workers.kv.frames import GRPC_OPTIONS, LayerChunk, TensorKind, checksum
from hybrid_workers.kv.proto import kv_pb2
from hybrid_workers.kv.wire import encode_chunk, parse

PATHS = ("protobuf", "wire", "wire_no_crc", "raw")


def _senders(payload: np.ndarray, chunk: int) -> dict[str, Callable[..., Iterator[bytes]]]:
    count = len(payload) // chunk
    ceiling = os.urandom(chunk)

    def protobuf(_request: bytes, _context: object) -> Iterator[bytes]:
        for i in range(count):
            data = payload[i * chunk : (i + 1) * chunk].tobytes()
            yield frame_to_pb(LayerChunk(i, TensorKind.KEYS, 0, data, checksum(data))).SerializeToString()

    def wire(_request: bytes, _context: object, crc: bool = True) -> Iterator[bytes]:
        for i in range(count):
            view = payload[i * chunk : (i + 1) * chunk].data
            yield encode_chunk(LayerChunk(i, TensorKind.KEYS, 0, view, checksum(view) if crc else 0))

    def raw(_request: bytes, _context: object) -> Iterator[bytes]:
        for _ in range(count):
            yield ceiling

    return {"protobuf": protobuf, "wire": wire, "wire_no_crc": lambda r, c: wire(r, c, crc=False), "raw": raw}


def _receive(path: str, messages: Iterator[bytes], total: int) -> None:
    buffer, offset = np.empty(total, np.uint8), 0
    for message in messages:
        if path == "raw":
            continue
        frame = parse(message) if path != "protobuf" else frame_from_pb(kv_pb2.Frame.FromString(message))
        assert isinstance(frame, LayerChunk)
        if path != "wire_no_crc" and zlib.crc32(frame.data) != frame.crc32:
            raise RuntimeError("checksum mismatch")
        buffer[offset : offset + len(frame.data)] = np.frombuffer(frame.data, np.uint8)
        offset += len(frame.data)


def wire_paths(total: int = 24 << 20, chunk: int = 512 << 10, repeats: int = 10) -> dict[str, float]:
    """Median bytes/s per path, and each path's ratio to raw grpcio."""
    payload = np.random.default_rng(0).integers(0, 255, total, dtype=np.uint8)
    handlers = {
        name: grpc.unary_stream_rpc_method_handler(
            sender, request_deserializer=None, response_serializer=None
        )
        for name, sender in _senders(payload, chunk).items()
    }
    server = grpc.server(ThreadPoolExecutor(4), options=GRPC_OPTIONS)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler("bench.Wire", handlers),))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    channel = grpc.insecure_channel(f"127.0.0.1:{port}", options=GRPC_OPTIONS)
    calls = {
        p: channel.unary_stream(f"/bench.Wire/{p}", request_serializer=None, response_deserializer=None)
        for p in PATHS
    }
    rates: dict[str, list[float]] = {p: [] for p in PATHS}
    try:
        for round_ in range(repeats + 1):  # round 0 warms up
            for path in PATHS:
                start = time.perf_counter()
                _receive(path, calls[path](b""), total)
                if round_:
                    rates[path].append(total / (time.perf_counter() - start))
    finally:
        channel.close()
        server.stop(0)
    medians = {p: statistics.median(r) for p, r in rates.items()}
    return {
        **{f"{p}_bytes_per_s": v for p, v in medians.items()},
        **{f"{p}_over_raw": v / medians["raw"] for p, v in medians.items()},
    }


if __name__ == "__main__":
    import json

    print(json.dumps(wire_paths(), indent=2))
