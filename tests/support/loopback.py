"""Loopback helpers for tests that start servers: free ports, and a GET that waits for nothing."""

from __future__ import annotations

import socket
import urllib.request
from contextlib import ExitStack


def free_ports(count: int) -> list[int]:
    """`count` distinct ports free on 127.0.0.1 right now (held open together so they differ)."""
    with ExitStack() as stack:
        socks = [stack.enter_context(socket.socket()) for _ in range(count)]
        for sock in socks:
            sock.bind(("127.0.0.1", 0))
        return [int(sock.getsockname()[1]) for sock in socks]


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    return free_ports(1)[0]


def http_get(url: str) -> str:
    """The body at `url`, or "" while nothing answers there (2 s per try: callers poll)."""
    try:
        with urllib.request.urlopen(url, timeout=2) as response:
            return str(response.read().decode())
    except OSError:
        return ""
