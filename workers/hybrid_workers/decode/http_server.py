"""The decode worker's HTTP server: uvicorn, with connections that send nothing (or trickle) closed.

uvicorn closes a keep-alive connection idle after a response (`timeout_keep_alive`), but not one that
never completes its request headers: a new connection that sends nothing, or a few bytes now and
then, would stay open for ever. `HeaderTimeoutProtocol` closes a connection whose request headers
are not complete within `read_timeout_s` of the connection (or of the previous response). The body
has the same deadline, enforced while it is read (see body.py).
"""

from __future__ import annotations

import asyncio
from typing import Any

import h11
import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

# Seconds a keep-alive connection may stay idle between requests (uvicorn's default).
KEEP_ALIVE_S = 5
# Largest request head (request line + headers) in bytes; bigger ones get 400 from h11.
MAX_HEAD_BYTES = 64 << 10


class HeaderTimeoutProtocol(H11Protocol):
    """H11Protocol that closes connections whose request head does not arrive in time."""

    header_timeout_s: float = 30.0  # set by protocol_class()
    _head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm()

    def data_received(self, data: bytes) -> None:
        super().data_received(data)
        if self.conn.their_state is not h11.IDLE:  # the head is complete: the body has its own deadline
            self._disarm()

    def on_response_complete(self) -> None:
        super().on_response_complete()
        if not self.transport.is_closing() and self.conn.their_state is h11.IDLE:
            self._arm()  # the next request's head gets the same deadline

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)

    def _arm(self) -> None:
        self._disarm()
        self._head_timer = self.loop.call_later(self.header_timeout_s, self._head_timed_out)

    def _disarm(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def _head_timed_out(self) -> None:
        self._head_timer = None
        if self.conn.their_state is h11.IDLE and not self.transport.is_closing():
            self.transport.close()


def protocol_class(read_timeout_s: float) -> type[HeaderTimeoutProtocol]:
    """HeaderTimeoutProtocol with its deadline set (uvicorn instantiates the class itself)."""
    return type("HeaderTimeoutProtocol", (HeaderTimeoutProtocol,), {"header_timeout_s": read_timeout_s})


def server_config(app: Any, host: str, port: int, read_timeout_s: float, **options: Any) -> uvicorn.Config:
    """The uvicorn config the decode worker (and its tests) serve `app` with."""
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        http=protocol_class(read_timeout_s),
        timeout_keep_alive=KEEP_ALIVE_S,
        h11_max_incomplete_event_size=MAX_HEAD_BYTES,
        **options,
    )
