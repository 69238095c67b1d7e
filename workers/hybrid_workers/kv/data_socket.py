"""Socket I/O of the KV data connection: whole gather writes out, whole tensors in, few system calls.

Both ends keep the socket blocking, so every call goes straight to the kernel with the interpreter
lock released (a socket with a Python timeout costs a poll() per call and wakes per segment):
- `send_all`: one `sendmsg` of the headers and every tensor part, up to 512 buffers per call (TLS:
  one `sendall` per part).
- `receive_blocking` + `recv_exact`: a plain socket gets SO_RCVTIMEO (the hang guard: the receive
  returns what it has after `poll_s`) and a layer's payload is one `recvmsg_into` (scatter: scales,
  then a KV slot's per-head rows of keys and values) with MSG_WAITALL - one call and one lock
  reacquire per layer instead of one per segment. TLS sockets cannot take flags and
  OpenSSL retries a timed-out read inside the call, so they keep a Python timeout of `poll_s`.
"""

from __future__ import annotations

import socket
import ssl
import struct
from collections.abc import Callable, Sequence

from hybrid_workers.kv.errors import KVProtocolError, Reason

_WAITALL = getattr(socket, "MSG_WAITALL", 0)
_MAX_PARTS = 512  # buffers per gather write or scatter receive, under every platform's IOV_MAX (Linux 1024)


def send_all(sock: socket.socket, buffers: Sequence[bytes | memoryview]) -> None:
    """Send every byte of `buffers` in order: sendmsg (gather) on a plain socket, sendall per part on TLS."""
    if isinstance(sock, ssl.SSLSocket):
        for buffer in buffers:
            sock.sendall(buffer)
        return
    pending = [view for view in (memoryview(b).cast("B") for b in buffers) if view.nbytes]
    first = 0  # pending[first:] has not gone out yet
    while first < len(pending):
        sent = sock.sendmsg(pending[first : first + _MAX_PARTS])
        while first < len(pending) and sent >= pending[first].nbytes:  # what went out (all, but for a signal)
            sent -= pending[first].nbytes
            first += 1
        if sent:
            pending[first] = pending[first][sent:]


def receive_blocking(sock: socket.socket, poll_s: float) -> None:
    """Prepare a connected socket for `recv_exact`: blocking with a kernel receive timeout of `poll_s`
    (plain), or a Python timeout of `poll_s` (TLS)."""
    if isinstance(sock, ssl.SSLSocket) or not _WAITALL:
        sock.settimeout(poll_s)
        return
    sock.settimeout(None)
    seconds, micros = int(poll_s), max(1, round((poll_s - int(poll_s)) * 1e6))
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVTIMEO, struct.pack("@ll", seconds, micros))


def recv_exact(
    sock: socket.socket,
    buffers: memoryview | Sequence[memoryview],
    poll: Callable[[int], None],
    what: str,
) -> None:
    """Fill `buffers` (one view, or several filled in order) from `sock` with no copy in Python;
    KVProtocolError(TRUNCATED_CHUNK) at end of stream, (TRANSPORT) when the connection breaks.

    A plain socket fills them all with `recvmsg_into(..., MSG_WAITALL)` (a scatter read: the rows of a
    KV slot's layer in one call); TLS with `recv_into` per record. `poll(count)` runs after each
    receive with the bytes it got, and with 0 after each receive timeout (the caller's poll
    interval): it raises to give up (the caller's stall watch or cancellation).
    """
    views = [buffers] if isinstance(buffers, memoryview) else list(buffers)
    pending = [view.cast("B") for view in views if view.nbytes]
    got, total = 0, sum(view.nbytes for view in pending)
    tls = isinstance(sock, ssl.SSLSocket)
    while pending:
        try:
            if tls:
                count = sock.recv_into(pending[0])
            elif len(pending) == 1:
                count = sock.recv_into(pending[0], pending[0].nbytes, _WAITALL)
            else:
                count = sock.recvmsg_into(pending[:_MAX_PARTS], 0, _WAITALL)[0]
        except (TimeoutError, BlockingIOError):  # Python timeout, or SO_RCVTIMEO with nothing new
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
        while pending and count >= pending[0].nbytes:  # drop the filled views
            count -= pending[0].nbytes
            pending.pop(0)
        if pending and count:
            pending[0] = pending[0][count:]
