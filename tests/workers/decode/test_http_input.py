"""The HTTP layer never blocks: tokenising runs off the event loop, stalled clients are cut off,
an aborted upload is one log line and a cancelled request, sizes are refused before any work."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import socket
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from decode_servers import wait_for
from hybrid_workers.decode.app import create_app
from hybrid_workers.decode.config import DecodeConfig
from hybrid_workers.decode.worker import DecodeWorker
from hybrid_workers.metrics import sample_value

HOLD_GUARD_S = 30  # hang guard: a held tokenizer gives up after this (the test then fails)


class HeldTokenizer:
    """The real tokenizer, whose encoding call waits until the test releases it (once armed)."""

    def __init__(self, tokenizer: Any) -> None:
        self._tokenizer = tokenizer
        self.armed = False
        self.entered = threading.Event()
        self.release = threading.Event()
        self.gave_up = False

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        if self.armed:
            self.entered.set()
            self.gave_up = not self.release.wait(HOLD_GUARD_S)
        return self._tokenizer(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._tokenizer, name)


def test_health_answers_while_a_prompt_is_being_tokenised(tiny_lm: Any) -> None:
    held = HeldTokenizer(tiny_lm.tokenizer)
    worker = DecodeWorker(
        dataclasses.replace(tiny_lm, tokenizer=held), DecodeConfig(served_model_name="held")
    )
    body = {"model": "held", "prompt": "a prompt that must be tokenised " * 8, "max_tokens": 2}

    async def scenario() -> tuple[int, bool, int]:
        transport = httpx.ASGITransport(app=create_app(worker))
        async with httpx.AsyncClient(transport=transport, base_url="http://decode", timeout=60) as client:
            held.armed = True
            completion = asyncio.ensure_future(client.post("/v1/completions", json=body))
            await asyncio.to_thread(held.entered.wait, HOLD_GUARD_S)
            health = await client.get("/health")
            still_held = not held.release.is_set()  # /health finished while the tokenizer was held
            held.release.set()
            return health.status_code, still_held, (await completion).status_code

    try:
        health, still_held, completion = asyncio.run(scenario())
    finally:
        held.release.set()
        worker.close()
    assert held.entered.is_set() and not held.gave_up
    assert (health, still_held, completion) == (200, True, 200)


@pytest.fixture(scope="module")
def strict_server(module_decode_server: Any) -> Any:
    """A decode worker that gives clients half a second to send a request's head, then its body."""
    return module_decode_server(served_model_name="strict", read_timeout_s=0.5)


@pytest.fixture
def raw_connection(strict_server: Any) -> Iterator[socket.socket]:
    host, port = strict_server.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=HOLD_GUARD_S) as sock:
        yield sock


def read_until_closed(sock: socket.socket) -> bytes:
    """Everything the server sends until it closes the connection (socket timeout = hang guard)."""
    data = b""
    while chunk := sock.recv(65536):
        data += chunk
    return data


def test_a_connection_that_sends_nothing_is_closed(raw_connection: socket.socket) -> None:
    assert read_until_closed(raw_connection) == b""


def test_a_trickling_request_head_is_closed(raw_connection: socket.socket) -> None:
    raw_connection.sendall(b"POST /v1/completions HTTP/1.1\r\nHost: x\r\n")
    assert read_until_closed(raw_connection) == b""


def test_a_stalled_body_gets_408_and_the_connection_closes(raw_connection: socket.socket) -> None:
    head = b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
    raw_connection.sendall(head + b"Content-Length: 500\r\n\r\n" + b'{"model": "strict",')
    reply = read_until_closed(raw_connection)
    assert reply.startswith(b"HTTP/1.1 408") and b"request_timeout" in reply


def test_an_aborted_upload_is_one_line_and_counted_as_cancelled(strict_server: Any, caplog) -> None:
    labels = {"model": "strict", "outcome": "cancelled"}
    before = sample_value("hybrid_inference_requests_total", labels)
    host, port = strict_server.url.removeprefix("http://").split(":")
    with caplog.at_level(logging.INFO, logger="hybrid_inference.decode"):
        with socket.create_connection((host, int(port)), timeout=HOLD_GUARD_S) as sock:
            head = b"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n"
            sock.sendall(head + b'{"model": "strict", "prompt": "')
        wait_for(lambda: sample_value("hybrid_inference_requests_total", labels) == before + 1, "the count")
    lines = [r for r in caplog.records if "client disconnected while sending" in r.getMessage()]
    assert len(lines) == 1 and lines[0].exc_info is None
    assert not [r for r in caplog.records if "internal error" in r.getMessage()]


def test_a_declared_oversized_body_is_refused_before_it_is_read(raw_connection: socket.socket) -> None:
    from hybrid_workers.decode.app import MAX_BODY_BYTES

    raw_connection.sendall(
        f"POST /v1/completions HTTP/1.1\r\nHost: x\r\nContent-Length: {MAX_BODY_BYTES + 1}\r\n\r\n".encode()
    )
    reply = read_until_closed(raw_connection)  # no body was sent: the answer cannot have waited for one
    assert reply.startswith(b"HTTP/1.1 413") and b"body_too_large" in reply


def test_a_prompt_too_long_for_the_context_is_refused_before_tokenising(tiny_lm: Any) -> None:
    held = HeldTokenizer(tiny_lm.tokenizer)
    held.armed = True  # any tokenizer call would wait HOLD_GUARD_S and set gave_up
    worker = DecodeWorker(dataclasses.replace(tiny_lm, tokenizer=held), DecodeConfig(served_model_name="big"))
    prompt = "x" * (worker.limits.max_prompt_chars + 1)
    bodies = {
        "/v1/completions": {"model": "big", "prompt": prompt},
        "/v1/chat/completions": {"model": "big", "messages": [{"role": "user", "content": prompt}]},
    }

    async def post_all() -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=create_app(worker))
        async with httpx.AsyncClient(transport=transport, base_url="http://decode", timeout=60) as client:
            return [await client.post(path, json=body) for path, body in bodies.items()]

    try:
        replies = asyncio.run(post_all())
    finally:
        held.release.set()
        worker.close()
    assert not held.entered.is_set()
    for reply in replies:
        assert reply.status_code == 400 and reply.json()["error"]["code"] == "context_length_exceeded"
