"""The decode side of the KV data connection: where it goes (from the handshake) and opening it.

The prefill worker's handshake reply offers a data port (and the data version it speaks); the decode
worker then asks for the data connection in each request, and the Header of the reply says where to
open it: the replica's own address (`--kv-data-host`; "" means the gRPC target's host) and port -
or, with `--prefill-data-port` on the decode side (a NAT or a NodePort maps it), the gRPC target's
host at that port. It connects
with the channel's TLS settings (the certificate is checked against the gRPC target's host name) and
says hello with the transfer's id (kv/data_frame.py). Either side without the data connection (an
older release, `--kv-data-port 0`, a port this side cannot reach) means gRPC frames: the negotiated
fallback.
"""

from __future__ import annotations

import logging
import queue
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from hybrid_workers.kv.data_frame import DATA_VERSION, hello, negotiate
from hybrid_workers.kv.data_socket import receive_blocking
from hybrid_workers.kv.errors import KVProtocolError, Reason
from hybrid_workers.kv.tls import TLSConfig, client_context

log = logging.getLogger("hybrid_inference.decode")
POLL_S = 0.1  # receive timeout: how often a blocked receive lets the transfer's watch look


@dataclass(frozen=True)
class DataAddress:
    """Where this decode worker opens data connections to one prefill worker."""

    host: str
    port: int

    def __str__(self) -> str:
        return f"{self.host}:{self.port}"


def target_host(target: str) -> str:
    """The host of a gRPC target `host:port` (`[v6]:port` too; a `dns:` / `ipv4:` scheme dropped)."""
    address = target.split(":", 1)[1] if target.split(":", 1)[0] in ("dns", "ipv4", "ipv6") else target
    address = address.lstrip("/")
    host = address.rsplit(":", 1)[0] if ":" in address else address
    return host.strip("[]")


def offered(target: str, data_version: int, data_port: int, override_port: int | None) -> DataAddress | None:
    """The data address a handshake reply offers (None: gRPC frames); `override_port` replaces the port."""
    if not negotiate(data_version) or not data_port:
        return None  # an older worker without a data connection, or its data port is off
    return DataAddress(target_host(target), override_port or data_port)


def announced(target: str, host: str, port: int, override_port: int | None) -> DataAddress:
    """Where a transfer's Header says to open its data connection. `override_port` (a NAT or NodePort
    mapping, which exists at the address this worker dials) means the gRPC target's host at that port:
    the replica address the Header names is then a private one (a pod IP) this side cannot reach."""
    if override_port:
        return DataAddress(target_host(target), override_port)
    return DataAddress(host or target_host(target), port)


def reachable(address: DataAddress, timeout_s: float) -> str | None:
    """None when a TCP connection to `address` opens within `timeout_s`, else why not (one line)."""
    try:
        with socket.create_connection((address.host, address.port), timeout=timeout_s):
            return None
    except OSError as exc:
        return f"{exc.strerror or exc}"


def open_data(
    address: DataAddress,
    transfer_id: bytes,
    tls: TLSConfig | None,
    timeout_s: float,
    server_name: str,
    version: int = DATA_VERSION,
) -> socket.socket:
    """A data connection to `address` that said hello for `transfer_id` in data version `version`, ready
    for kv.data_socket.recv_exact (receive timeout POLL_S); KVProtocolError(TRANSPORT)."""
    try:
        sock = socket.create_connection((address.host, address.port), timeout=timeout_s)
    except OSError as exc:
        raise KVProtocolError(
            Reason.TRANSPORT,
            f"data connection to {address} failed ({exc.strerror or exc}); open that port to this worker, "
            "set --prefill-data-port when a NAT or NodePort maps it, or turn it off on the prefill "
            "worker (--kv-data-port 0)",
        ) from None
    try:
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        if tls is not None:
            sock = client_context(tls).wrap_socket(sock, server_hostname=server_name)  # as gRPC checks it
        sock.sendall(hello(transfer_id, version))
    except OSError as exc:  # ssl.SSLError is an OSError
        sock.close()
        raise KVProtocolError(
            Reason.TRANSPORT, f"data connection to {address}: TLS or hello failed ({exc})"
        ) from None
    receive_blocking(sock, POLL_S)
    return sock


class StreamDrain:
    """The rest of a Prefill call's gRPC stream, read on its own thread while the layers arrive on the
    data connection: heartbeats keep the transfer's stall watch fed (`progress`), and the frames (or
    the call's error) wait in order for the caller, who iterates this as it would the call."""

    _END = object()

    def __init__(self, source: Iterator[bytes], progress: Callable[[], None]) -> None:
        self._queue: queue.Queue[object] = queue.Queue()
        self._source, self._progress = source, progress
        threading.Thread(target=self._run, name="prefill-stream-drain", daemon=True).start()

    def __iter__(self) -> StreamDrain:
        return self

    def __next__(self) -> bytes:
        item = self._queue.get()
        if item is self._END:
            raise StopIteration
        if isinstance(item, BaseException):
            raise item  # the call's RpcError, raised on the caller's thread
        return item  # type: ignore[return-value]

    def _run(self) -> None:
        try:
            for message in self._source:
                self._progress()
                self._queue.put(message)
        except Exception as exc:
            self._queue.put(exc)
        self._queue.put(self._END)
