"""Helpers of the decode-worker tests: real uvicorn servers on free ports, a forward-pass gate, polling."""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
import uvicorn
from hybrid_workers.decode.app import create_app
from hybrid_workers.decode.config import DecodeConfig
from hybrid_workers.decode.http_server import server_config
from hybrid_workers.decode.worker import DecodeWorker
from support.loopback import free_port


@dataclass
class RunningServer:
    """A decode worker serving on `url`; `name` is its model name (and the metrics' model label)."""

    url: str
    name: str
    worker: DecodeWorker

    def client(self, timeout: float = 60, **kwargs: Any) -> httpx.Client:
        """A synchronous HTTP client for this server."""
        return httpx.Client(base_url=self.url, timeout=timeout, **kwargs)


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
    config = server_config(
        create_app(worker), "127.0.0.1", port, worker.config.read_timeout_s, log_level="warning"
    )
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


class ForwardGate:
    """Holds every forward pass of the model until the test lets it through (deterministic scheduling).

    `allow(n)` lets n more forward passes run; `open()` lets all through; `passed` counts them.
    """

    def __init__(self) -> None:
        self._permits = threading.Semaphore(0)
        self._open = threading.Event()
        self.passed = 0

    def __call__(self, *_: Any) -> None:
        while not self._open.is_set():
            if self._permits.acquire(timeout=0.05):
                break
        self.passed += 1

    def allow(self, count: int) -> None:
        """Let `count` more forward passes through."""
        for _ in range(count):
            self._permits.release()

    def open(self) -> None:
        """Let everything through from now on."""
        self._open.set()


def wait_for(condition: Callable[[], bool], what: str, timeout_s: float = 30.0) -> None:
    """Poll until `condition()` holds (synchronisation, not a timing assertion)."""
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.01)
