"""Reading a request body: its size checked before and while it is read, within a deadline.

A declared Content-Length over the limit is refused before a byte of the body is read; a chunked
body is cut off as soon as it passes the limit. A body that does not arrive within the read timeout
(a stalled or trickling client) gets 408 and the connection is closed. A client that goes away while
sending raises `UploadAborted`, which the app logs as one line (no traceback) and counts as cancelled.
"""

from __future__ import annotations

import asyncio

from fastapi import Request
from starlette.requests import ClientDisconnect

from hybrid_workers.decode.api_errors import ApiError


class UploadAborted(Exception):
    """The client disconnected before its request body was complete."""

    def __init__(self, received: int) -> None:
        super().__init__(f"client disconnected while sending its request body ({received} bytes received)")
        self.received = received


def _too_large(size: int, limit: int) -> ApiError:
    return ApiError(
        413,
        f"request body of {size} bytes exceeds the limit of {limit} bytes; send a shorter prompt",
        code="body_too_large",
        headers={"Connection": "close"},
    )


async def read_body(request: Request, limit: int, timeout_s: float) -> bytes:
    """The whole body; 413 over `limit` bytes, 408 after `timeout_s` seconds, UploadAborted if cut."""
    declared = request.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise _too_large(int(declared), limit)
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(timeout_s):
            async for chunk in request.stream():
                size += len(chunk)
                if size > limit:
                    raise _too_large(size, limit)
                chunks.append(chunk)
    except TimeoutError:
        raise ApiError(
            408,
            f"request body not received within {timeout_s:g} s ({size} bytes arrived); send it at once",
            code="request_timeout",
            headers={"Connection": "close"},
        ) from None
    except ClientDisconnect:
        raise UploadAborted(size) from None
    return b"".join(chunks)
