"""X-Request-Id on every response of the decode worker: errors, 429s, 503s and streams included.

An ASGI middleware (not Starlette's BaseHTTPMiddleware, which would buffer streams): it takes the
client's own X-Request-Id when it is a sane token (so a caller can correlate its logs with ours),
else makes one, puts it in `scope["state"]["request_id"]` for the handlers (the per-request log line
and the fallback logs name it) and adds it to the response headers.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

REQUEST_ID_HEADER = "X-Request-Id"
_SANE = re.compile(r"[A-Za-z0-9._:-]{1,64}")

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Awaitable[None]]


def new_request_id() -> str:
    """A fresh id: 16 hex digits."""
    return uuid.uuid4().hex[:16]


def request_id_of(scope: Scope) -> str:
    """The id the middleware gave this request (a fresh one outside the middleware)."""
    state = scope.get("state") or {}
    return str(state.get("request_id") or new_request_id())


class RequestIdMiddleware:
    """Wraps an ASGI app; see the module docstring."""

    def __init__(self, app: App) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        headers = dict(scope.get("headers") or [])
        given = headers.get(REQUEST_ID_HEADER.lower().encode(), b"").decode("latin-1")
        request_id = given if _SANE.fullmatch(given) else new_request_id()
        scope.setdefault("state", {})["request_id"] = request_id
        header = (REQUEST_ID_HEADER.lower().encode(), request_id.encode())

        async def send_with_id(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = [h for h in message.get("headers", []) if h[0].lower() != header[0]]
                message["headers"] = [*headers, header]
            await send(message)

        await self.app(scope, receive, send_with_id)
