"""Measure the link to a running prefill worker: KV payload throughput and one-way latency.

Throughput comes from a real bulk-mode Prefill: the worker computes the whole prompt first, then
streams every layer back-to-back, so first KV chunk -> last KV chunk at the receiver is pure transfer
(the same gRPC path, chunk size and message copies as a real KV transfer). Latency is half the median
round trip of a grpc.health.v1 Check. The result is a link profile in the planner's JSON shape.
"""

from __future__ import annotations

import statistics
import time
from dataclasses import dataclass
from typing import Any

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from hybrid_workers.enums import TransferMode, WireEncoding
from hybrid_workers.errors import UserError
from hybrid_workers.kv.convert import request_to_pb
from hybrid_workers.kv.frames import GRPC_OPTIONS, KVRequest
from hybrid_workers.kv.proto import kv_pb2, kv_pb2_grpc
from hybrid_workers.prefill.servicer import SERVICE_NAME


@dataclass(frozen=True)
class Transfer:
    """One bulk prefill's KV stream as the receiver saw it."""

    payload_bytes: int  # chunk data + scales
    seconds: float  # first KV chunk received -> last KV chunk received
    chunks: int


def _stream(stub: Any, tokens: int, timeout: float) -> Transfer:
    request = KVRequest(
        token_ids=tuple(3 + i % 97 for i in range(tokens)), mode=TransferMode.BULK, encoding=WireEncoding.NONE
    )
    first = last = 0.0
    payload = chunks = 0
    for frame in stub.Prefill(request_to_pb(request), timeout=timeout):
        if frame.WhichOneof("kind") != "layer":
            continue
        last = time.perf_counter()
        first = first or last
        payload += len(frame.layer.data) + len(frame.layer.scales)
        chunks += 1
    return Transfer(payload, last - first, chunks)


def _latency_seconds(channel: grpc.Channel, timeout: float, calls: int = 20) -> float:
    """Half the median round trip of a grpc.health.v1 Check (a tiny request and reply)."""
    health = health_pb2_grpc.HealthStub(channel)
    request = health_pb2.HealthCheckRequest(service=SERVICE_NAME)
    rounds = []
    for _ in range(calls):
        start = time.perf_counter()
        health.Check(request, timeout=timeout)
        rounds.append(time.perf_counter() - start)
    return statistics.median(rounds) / 2


def measure_link(
    peer: str, name: str, tokens: int = 0, repeats: int = 3, timeout: float = 120.0
) -> dict[str, Any]:
    """A link profile (planner JSON) for the path to the prefill worker at `peer` (HOST:PORT).

    `tokens`: prompt length; 0 takes the worker's context less one (more bytes, steadier numbers).
    """
    with grpc.insecure_channel(peer, options=GRPC_OPTIONS) as channel:
        stub = kv_pb2_grpc.PrefillWorkerStub(channel)
        try:
            info = stub.Info(kv_pb2.InfoRequest(), timeout=timeout)
            latency = _latency_seconds(channel, timeout)
            length = tokens or max(1, min(info.max_context - 1, 4096))
            transfers = [_stream(stub, length, timeout) for _ in range(repeats)]
        except grpc.RpcError as exc:
            raise UserError(
                f"--peer {peer}: prefill worker not reachable or refused: {exc.details()}"
            ) from None
    timed = [t for t in transfers if t.chunks > 1 and t.seconds > 0]
    if not timed:
        raise UserError(f"--peer {peer}: the KV stream was a single chunk; use a longer --peer-tokens")
    # Chunks after the first: the first chunk's own transfer happened before the clock started.
    rates = [t.payload_bytes * (t.chunks - 1) / t.chunks / t.seconds for t in timed]
    rate = statistics.median(rates)
    return {
        "kind_of_profile": "link",
        "id": name,
        "name": f"measured to {peer}",
        "gbps": round(rate * 8 / 1e9, 4),
        "efficiency": 1.0,
        "latency_seconds": round(latency, 7),
        "source": (
            f"hybrid-inference calibrate --peer {peer} at {time.strftime('%Y-%m-%d %H:%M:%S')}: "
            f"{length}-token bulk prefill of {info.model_name} ({timed[0].payload_bytes} KV bytes), "
            f"median of {len(timed)} streams; latency = health check RTT / 2"
        ),
    }
