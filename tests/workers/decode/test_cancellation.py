"""Clients that leave: the work stops at once (a pending remote prefill too) and is never a fallback."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from typing import Any

import pytest
from decode_servers import wait_for
from hybrid_workers.decode import runner
from hybrid_workers.decode.prefill_client import PrefillClient
from hybrid_workers.metrics import FallbackReason, sample_value
from hybrid_workers.prefill.server import PrefillServerConfig, start_server

LONG_PROMPT = "A client that leaves while its prompt prefills elsewhere should cost nothing more. " * 2


def metric(name: str, **labels: str) -> float:
    return sample_value("hybrid_inference_" + name, labels)


def fallbacks(model: str) -> float:
    return sum(metric("prefill_fallback_total", model=model, reason=r.value) for r in FallbackReason)


def raw_post(url: str, body: dict[str, Any]) -> socket.socket:
    """Send a completion request on a plain socket (closing it is the client leaving)."""
    host, port = url.removeprefix("http://").split(":")
    payload = json.dumps(body).encode()
    sock = socket.create_connection((host, int(port)), timeout=60)
    head = (
        f"POST /v1/completions HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
        f"Content-Length: {len(payload)}\r\n\r\n"
    )
    sock.sendall(head.encode() + payload)
    return sock


@pytest.fixture
def gated_prefill_worker(prefill_lm: Any, prefill_gate: Any) -> Iterator[Any]:
    """A real prefill worker whose forward passes wait for `prefill_gate` (a prefill that hangs)."""
    running = start_server(prefill_lm, PrefillServerConfig(host="127.0.0.1", port=0))
    yield running
    prefill_gate.open()
    running.stop(0)


@pytest.mark.parametrize("stream", [True, False])
def test_leaving_during_a_remote_prefill_cancels_the_call_frees_the_slot_and_is_no_fallback(
    decode_server, tiny_lm, gated_prefill_worker, prefill_gate, stream: bool
) -> None:
    target = f"127.0.0.1:{gated_prefill_worker.port}"
    peer = PrefillClient(target, tiny_lm, timeout_s=120, stall_s=60)  # neither limit can end it here
    server = decode_server(peer, prefill=target, remote_prefill_min_tokens=4, prefill_stall_s=60)
    body = {"model": server.name, "prompt": LONG_PROMPT, "max_tokens": 4, "stream": stream}
    client = raw_post(server.url, body)
    wait_for(lambda: gated_prefill_worker.servicer._pending == 1, "the prefill worker to take the request")
    client.close()
    wait_for(lambda: metric("requests_running", model=server.name) == 0, "the slot to be freed")
    wait_for(lambda: gated_prefill_worker.servicer._pending == 0, "the prefill worker to drop the call")
    # The prefill never ran a layer: only the cancellation can have freed the slot and the worker.
    assert prefill_gate.passed == 0
    assert metric("remote_prefill_total", model=server.name, outcome="cancelled") == 1
    assert metric("remote_prefill_total", model=server.name, outcome="failed") == 0
    assert fallbacks(server.name) == 0
    assert metric("requests_total", model=server.name, outcome="cancelled") == 1
    peer.close()


def test_a_non_streaming_client_leaving_while_tokens_flow_is_noticed_within_one_token(
    decode_server, forward_gate, monkeypatch
) -> None:
    forward_gate.open()  # count forward passes, hold none
    server = decode_server(max_concurrency=1)
    body = {"model": server.name, "prompt": "a long answer please", "max_tokens": 300, "temperature": 0}
    with server.client() as client:  # precondition: this prompt really runs to max_tokens
        assert client.post("/v1/completions", json=body).json()["usage"]["completion_tokens"] == 300
    at_cancel: list[int] = []
    real_cancel = runner.RequestRun.cancel

    def cancel(self: Any) -> None:
        at_cancel.append(forward_gate.passed)
        real_cancel(self)

    monkeypatch.setattr(runner.RequestRun, "cancel", cancel)
    passes_before = forward_gate.passed
    sock = raw_post(server.url, body)
    wait_for(lambda: forward_gate.passed >= passes_before + 5, "tokens to flow")
    sock.close()
    wait_for(lambda: metric("requests_total", model=server.name, outcome="cancelled") == 1, "the cancel")
    wait_for(lambda: metric("requests_running", model=server.name) == 0, "the slot to be freed")
    # At most the forward pass that was running when the cancel came: the slot went before the next.
    assert forward_gate.passed <= at_cancel[0] + 1
    assert forward_gate.passed - passes_before < 300
    assert metric("requests_total", model=server.name, outcome="success") == 1  # the precondition only
    assert fallbacks(server.name) == 0
