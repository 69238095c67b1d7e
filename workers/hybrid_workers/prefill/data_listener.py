"""The prefill worker's KV data port: accepts data connections and hands each to the Prefill call it names.

A decode worker opens one data connection per transfer (TLS/mTLS with the gRPC port's certificates
when those are set) and sends a hello with the transfer's 16-byte id and the data version it chose;
the Prefill call carrying that id `claim`s it (with that version: its payload checksum).
Connections nobody claims within `unclaimed_s` are closed, as are those whose hello is wrong or late
(`hello_timeout_s`); at most `max_pending` wait at once (the oldest is dropped).
"""

from __future__ import annotations

import logging
import socket
import ssl
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass

from hybrid_workers.errors import UserError
from hybrid_workers.kv.data_frame import HELLO, parse_hello
from hybrid_workers.kv.tls import TLSConfig, server_context

log = logging.getLogger("hybrid_inference.prefill")
_ACCEPT_POLL_S = 0.2  # how often the accept loop checks for close()


@dataclass(frozen=True)
class DataConnection:
    """A claimed data connection and the data version its hello named."""

    sock: socket.socket
    version: int

    def close(self) -> None:
        self.sock.close()


class DataListener:
    """Listens on the data port; `claim(transfer_id, wait_s)` gives the Prefill call its connection."""

    def __init__(
        self,
        host: str,
        port: int,
        tls: TLSConfig | None = None,
        *,
        hello_timeout_s: float = 5.0,
        unclaimed_s: float = 30.0,
        max_pending: int = 64,
    ) -> None:
        self._context = server_context(tls) if tls is not None else None
        self._hello_timeout_s = hello_timeout_s
        self._unclaimed_s = unclaimed_s
        self._max_pending = max_pending
        self._pending: OrderedDict[bytes, tuple[DataConnection, float]] = OrderedDict()
        self._cond = threading.Condition()
        self._closed = threading.Event()
        try:
            self._sock = socket.create_server((host, port), reuse_port=False)
        except OSError as exc:
            raise UserError(
                f"--kv-data-port {port}: cannot listen on {host} ({exc}); pick a free port, or 0 to turn "
                "the data connection off"
            ) from None
        self._sock.settimeout(_ACCEPT_POLL_S)
        self.port: int = self._sock.getsockname()[1]
        self._thread = threading.Thread(target=self._accept_loop, name="kv-data-accept", daemon=True)
        self._thread.start()

    def claim(self, transfer_id: bytes, wait_s: float) -> DataConnection | None:
        """The connection that said hello with `transfer_id`, waiting up to `wait_s`; None if none yet."""
        deadline = time.monotonic() + wait_s
        with self._cond:
            while transfer_id not in self._pending:
                left = deadline - time.monotonic()
                if left <= 0 or self._closed.is_set():
                    return None
                self._cond.wait(left)
            conn, _ = self._pending.pop(transfer_id)
        conn.sock.settimeout(None)  # the sender blocks in sendmsg; a cancelled call shuts the socket down
        return conn

    def close(self) -> None:
        """Stop accepting and close every unclaimed connection."""
        self._closed.set()
        self._thread.join(timeout=2 * _ACCEPT_POLL_S + 1)
        self._sock.close()
        with self._cond:
            for conn, _ in self._pending.values():
                conn.close()
            self._pending.clear()
            self._cond.notify_all()

    def _accept_loop(self) -> None:
        while not self._closed.is_set():
            try:
                conn, peer = self._sock.accept()
            except TimeoutError:
                self._expire()
                continue
            except OSError:
                return  # closed
            threading.Thread(target=self._greet, args=(conn, peer), name="kv-data-hello", daemon=True).start()

    def _greet(self, conn: socket.socket, peer: object) -> None:
        """TLS handshake and hello within hello_timeout_s, then park the connection for its call."""
        conn.settimeout(self._hello_timeout_s)
        try:
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            if not conn.recv(1, socket.MSG_PEEK):
                conn.close()  # a reachability probe (the decode side's handshake): nothing to say
                return
            if self._context is not None:
                conn = self._context.wrap_socket(conn, server_side=True)
            raw = bytearray(HELLO.size)
            view, got = memoryview(raw), 0
            while got < HELLO.size:
                count = conn.recv_into(view[got:])
                if count == 0:
                    raise ValueError(f"closed after {got} bytes of the hello")
                got += count
            transfer_id, version = parse_hello(bytes(raw))
        except (OSError, ssl.SSLError, ValueError) as exc:
            log.warning("data connection from %s refused: %s", peer, exc)
            conn.close()
            return
        with self._cond:
            old = self._pending.pop(transfer_id, None)
            if old is not None:
                old[0].close()  # a reconnect for the same transfer: the newest wins
            self._pending[transfer_id] = (DataConnection(conn, version), time.monotonic())
            while len(self._pending) > self._max_pending:
                _, (oldest, _) = self._pending.popitem(last=False)
                oldest.close()
            self._cond.notify_all()

    def _expire(self) -> None:
        now = time.monotonic()
        with self._cond:
            for transfer_id in [t for t, (_, at) in self._pending.items() if now - at > self._unclaimed_s]:
                self._pending.pop(transfer_id)[0].close()
