"""Fixtures: decode workers serving the tiny model over real HTTP (uvicorn on a free loopback port)."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import uvicorn
from hybrid_workers.decode.app import create_app
from hybrid_workers.decode.config import DecodeConfig
from hybrid_workers.decode.worker import DecodeWorker


@dataclass
class RunningServer:
    """A decode worker serving on `url`; `name` is its model name (and the metrics' model label)."""

    url: str
    name: str
    worker: DecodeWorker

    def client(self, **kwargs: Any) -> httpx.Client:
        """A synchronous HTTP client for this server."""
        return httpx.Client(base_url=self.url, timeout=60, **kwargs)


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class _ServerThread(threading.Thread):
    def __init__(self, server: uvicorn.Server) -> None:
        super().__init__(daemon=True)
        self.server = server

    def run(self) -> None:
        asyncio.run(self.server.serve())


def start_server(lm: Any, peer: Any = None, **overrides: Any) -> tuple[RunningServer, _ServerThread]:
    """Serve `lm` with DecodeConfig `overrides` on a free port; returns the server and its thread."""
    name = overrides.pop("served_model_name", f"tiny-{uuid.uuid4().hex[:8]}")
    worker = DecodeWorker(lm, DecodeConfig(served_model_name=name, **overrides), peer)
    port = free_port()
    config = uvicorn.Config(create_app(worker), host="127.0.0.1", port=port, log_level="warning")
    thread = _ServerThread(uvicorn.Server(config))
    thread.start()
    deadline = time.monotonic() + 20
    while not thread.server.started:
        if time.monotonic() > deadline or not thread.is_alive():
            raise RuntimeError("decode test server did not start")
        time.sleep(0.02)
    return RunningServer(f"http://127.0.0.1:{port}", name, worker), thread


def stop_server(running: RunningServer, thread: _ServerThread) -> None:
    """Stop the server and its worker's threads."""
    thread.server.should_exit = True
    thread.join(timeout=10)
    running.worker.close()


@pytest.fixture
def decode_server(tiny_lm: Any) -> Iterator[Callable[..., RunningServer]]:
    """Factory: start a decode worker for the tiny model with DecodeConfig overrides (and a peer)."""
    started: list[tuple[RunningServer, _ServerThread]] = []

    def start(peer: Any = None, **overrides: Any) -> RunningServer:
        started.append(start_server(tiny_lm, peer, **overrides))
        return started[-1][0]

    yield start
    for running, thread in started:
        stop_server(running, thread)


@pytest.fixture(scope="module")
def module_decode_server(tiny_lm: Any) -> Iterator[Callable[..., RunningServer]]:
    """Like decode_server, but the servers live for the whole test module."""
    started: list[tuple[RunningServer, _ServerThread]] = []

    def start(peer: Any = None, **overrides: Any) -> RunningServer:
        started.append(start_server(tiny_lm, peer, **overrides))
        return started[-1][0]

    yield start
    for running, thread in started:
        stop_server(running, thread)
