"""The sending end of one Prefill call's KV data connection (docs/kv-wire.md "Data connection").

The call's gRPC handler thread claims the connection when its first layer is ready (sending
heartbeats while it waits), then writes each layer as one frame: header and tensor bytes straight
from the tensors' memory (kv/data_frame.py), the interpreter lock released while the kernel copies,
so the compute thread keeps its core. Layers that are final together - all of them in bulk mode,
or those that piled up while a layerwise send waited for the network - go out in one gather write.
"""

from __future__ import annotations

import contextlib
import socket
import time
from collections.abc import Iterator, Sequence

import grpc

from hybrid_workers import metrics
from hybrid_workers.kv.compression import encode
from hybrid_workers.kv.data_frame import PayloadChecksum, payload_checksum, send_layers, transfer_ref
from hybrid_workers.kv.errors import REASON_METADATA, Reason
from hybrid_workers.kv.frames import Heartbeat, KVRequest
from hybrid_workers.prefill.data_listener import DataListener
from hybrid_workers.prefill.pipe import Cancelled, LayerReady


class DataSender:
    """One call's data connection: claimed from the listener at the first layer, then one frame per layer."""

    def __init__(
        self, listener: DataListener, request: KVRequest, context: grpc.ServicerContext, model: str
    ) -> None:
        self.listener = listener
        self.request = request
        self.context = context
        self.model = model  # the metrics' label
        self.sock: socket.socket | None = None
        self.checksum: PayloadChecksum | None = None  # the claimed connection's, unless turned off
        context.add_callback(self.close)  # the call ended (client gone, deadline): unblock a sendmsg

    def connect(self, timeout_s: float, beat_s: float) -> Iterator[Heartbeat]:
        """Wait for the data connection (heartbeats meanwhile); abort the call when it never comes."""
        deadline = time.monotonic() + timeout_s
        while self.sock is None:
            conn = self.listener.claim(self.request.transfer_id, min(beat_s, timeout_s))
            if conn is not None:
                self.sock = conn.sock
                self.checksum = payload_checksum(conn.version) if self.request.data_checksum else None
                return
            if time.monotonic() >= deadline:
                self.context.set_trailing_metadata(((REASON_METADATA, Reason.TRANSPORT.value),))
                self.context.abort(
                    grpc.StatusCode.UNAVAILABLE,
                    f"the data connection for transfer {self.request.transfer_id.hex()} did not arrive "
                    f"within {timeout_s:g} s; check that the decode worker reaches the data port "
                    f"{self.listener.port} (or turn it off: --kv-data-port 0)",
                )
            yield Heartbeat()

    def send(self, items: Sequence[LayerReady]) -> list[float]:
        """Send layers that are final (in order) on the data connection, all in one gather write; per
        layer, the seconds its send took (sender's clock: the write's time shared out by bytes)."""
        assert self.sock is not None
        encoding = self.request.encoding
        layers = [(item.index, encode(item.keys, encoding), encode(item.values, encoding)) for item in items]
        started = time.perf_counter()
        try:
            sent = send_layers(self.sock, transfer_ref(self.request.transfer_id), layers, self.checksum)
        except OSError as exc:
            raise Cancelled() from exc  # the decode side went away (its call ends too)
        seconds = time.perf_counter() - started
        total = sum(sent)
        metrics.kv_frames_sent_total.labels(self.model).inc(len(sent))
        metrics.kv_send_bytes_total.labels(self.model).inc(total)
        return [seconds * size / total if total else seconds / len(sent) for size in sent]

    def close(self) -> None:
        """Shut the connection down (idempotent, any thread): a blocked send returns at once."""
        sock = self.sock
        if sock is None:
            return
        with contextlib.suppress(OSError):  # already closed by the peer
            sock.shutdown(socket.SHUT_RDWR)
        sock.close()
