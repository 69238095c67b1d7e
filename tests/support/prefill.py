"""A real prefill worker (gRPC) started in this process on a free loopback port, for fixtures."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any


@contextmanager
def prefill_server(lm: Any, **settings: Any) -> Iterator[Any]:  # -> RunningServer
    """Serve `lm` on 127.0.0.1 (a free port) with PrefillServerConfig `settings`; stop on exit."""
    from hybrid_workers.prefill.config import PrefillServerConfig
    from hybrid_workers.prefill.server import start_server

    running = start_server(lm, PrefillServerConfig(host="127.0.0.1", port=0, **settings))
    try:
        yield running
    finally:
        running.stop(grace_s=0)
