"""The decode side's clock of one remote prefill: receipt times, and the TransferTimings they give.

All times are perf_counter durations relative to the request's send (the decode clock); the prefill
worker's durations come from its trailer. No two hosts' clocks are compared: exposed transfer and
time on the wire are built from durations (decode/prefill_client.py's module doc).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from hybrid_workers.kv.frames import Frame, LayerChunk, Trailer


@dataclass(frozen=True)
class TransferTimings:
    """One remote prefill's costs. `_s` fields are seconds; `at` fields count from the request's send."""

    prefill_compute_s: float  # prefill worker: its prefill start -> first token sampled
    queue_s: float  # prefill worker: waiting behind other prefills
    transfer_s: float  # decode clock: first KV chunk received -> last KV chunk received
    exposed_transfer_s: float  # last layer final (prefill) -> last KV chunk received (see module doc)
    total_s: float  # decode clock: request sent -> trailer received
    bytes: int  # KV bytes received (wire size, scales included)
    first_chunk_at_s: float  # decode clock: request sent -> first KV chunk received
    layer_received_at_s: tuple[float, ...]  # decode clock: request sent -> layer i complete
    layer_done_at_s: tuple[float, ...]  # prefill clock: request arrived -> layer i final
    layer_compute_s: tuple[float, ...]  # prefill clock: compute time of layer i
    transport: str = "grpc"  # tcp: the data connection carried the layers; grpc: LayerChunk frames
    wire_s: float = 0.0  # time on the wire: per layer max(sender's send, receiver's receive), summed
    goodput_bytes_per_s: float = 0.0  # bytes / wire_s: what the link delivered while it carried KV


class TransferClock:
    """Receipt times on the decode side (perf_counter, relative to the request's send)."""

    def __init__(self, num_layers: int) -> None:
        self.start = time.perf_counter()
        self.first_chunk: float | None = None
        self.last_chunk = 0.0
        self.end = 0.0
        self.layers = [0.0] * num_layers
        self.layer_first = [0.0] * num_layers  # gRPC frames: the layer's first chunk received
        self.receive_seconds: list[float] | None = None  # data connection: per layer, header -> last byte

    def frame_received(self, frame: Frame) -> None:
        now = time.perf_counter() - self.start
        if isinstance(frame, LayerChunk):
            self.first_chunk = now if self.first_chunk is None else self.first_chunk
            self.last_chunk = now
            if frame.offset == 0 and frame.kind.value == "keys":
                self.layer_first[frame.layer] = now

    def bytes_received(self) -> None:
        """Bytes arrived on the data connection."""
        now = time.perf_counter() - self.start
        self.first_chunk = now if self.first_chunk is None else self.first_chunk
        self.last_chunk = now

    def layer_received(self, index: int) -> None:
        self.layers[index] = time.perf_counter() - self.start

    def done(self) -> None:
        self.end = time.perf_counter() - self.start

    def timings(self, trailer: Trailer, wire_bytes: int) -> TransferTimings:
        first = self.first_chunk or 0.0
        received = self.receive_seconds or [
            done - start for done, start in zip(self.layers, self.layer_first, strict=True)
        ]
        sent = trailer.layer_send_seconds or (0.0,) * len(received)
        wire_s = sum(max(a, b) for a, b in zip(sent, received, strict=False))
        return TransferTimings(
            prefill_compute_s=trailer.prefill_seconds,
            queue_s=trailer.queue_seconds,
            transfer_s=self.last_chunk - first,
            exposed_transfer_s=max(0.0, self.last_chunk - trailer.layer_done_seconds[-1]),
            total_s=self.end,
            bytes=wire_bytes,
            first_chunk_at_s=first,
            layer_received_at_s=tuple(self.layers),
            layer_done_at_s=trailer.layer_done_seconds,
            layer_compute_s=trailer.layer_seconds,
            transport="grpc" if self.receive_seconds is None else "tcp",
            wire_s=wire_s,
            goodput_bytes_per_s=wire_bytes / wire_s if wire_s > 0 else 0.0,
        )
