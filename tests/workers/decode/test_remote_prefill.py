"""Remote prefill through a real prefill worker (gRPC on loopback): equivalence, routing, fallback."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from decode_servers import wait_for
from hybrid_workers.decode.prefill_client import PrefillClient
from hybrid_workers.kv import KVProtocolError
from hybrid_workers.metrics import sample_value
from hybrid_workers.prefill.config import PrefillServerConfig
from hybrid_workers.prefill.server import start_server

LONG_PROMPT = "Prefill is compute bound and decode is bandwidth bound, so each goes where it runs best. " * 3
SHORT_PROMPT = "Hello there"


@pytest.fixture
def prefill_worker(prefill_lm: Any) -> Iterator[Any]:
    """A real prefill worker (gRPC server) for the tiny model on a free loopback port."""
    running = start_server(prefill_lm, PrefillServerConfig(host="127.0.0.1", port=0))
    yield running
    running.stop(0)


def remote_server(decode_server: Any, tiny_lm: Any, prefill_worker: Any, **overrides: Any) -> Any:
    """A decode worker whose prefill peer is `prefill_worker`."""
    target = f"127.0.0.1:{prefill_worker.port}"
    return decode_server(PrefillClient(target, tiny_lm, timeout_s=30.0), prefill=target, **overrides)


def metric(name: str, **labels: str) -> float:
    return sample_value("hybrid_inference_" + name, labels)


def complete(server: Any, prompt: str, **extra: Any) -> Any:
    body = {
        "model": server.name,
        "prompt": prompt,
        "max_tokens": 12,
        "temperature": 0,
        "logprobs": 0,
        **extra,
    }
    with server.client() as client:
        return client.post("/v1/completions", json=body)


def kill_during_prefill(lm: Any, running: Any, layer: int = 1) -> None:
    """Stop the prefill worker while it computes `layer` of the next prefill (one-shot hook).

    The hook holds that layer back until the server is gone, so the KV stream breaks mid-way: the
    earlier layers have been sent, the later ones never will be.
    """
    stopped = threading.Event()

    def hook(*_: Any) -> None:
        handle.remove()
        threading.Thread(target=lambda: (running.server.stop(0).wait(), stopped.set()), daemon=True).start()
        stopped.wait(timeout=10)
        time.sleep(0.2)  # let the cancellation reach the client before this layer finishes

    handle = lm.model.model.layers[layer].register_forward_hook(hook)


def test_remote_and_local_prefill_give_identical_tokens(decode_server, prefill_worker, tiny_lm) -> None:
    local = decode_server()
    remote = remote_server(decode_server, tiny_lm, prefill_worker, remote_prefill_min_tokens=8)
    bytes_before = metric("kv_transfer_bytes_total", model=remote.name)
    for extra in ({}, {"temperature": 0.8, "seed": 11, "top_p": 0.9}):
        want = complete(local, LONG_PROMPT, **extra).json()["choices"][0]
        got = complete(remote, LONG_PROMPT, **extra).json()["choices"][0]
        assert got["text"] == want["text"]
        assert got["logprobs"]["tokens"] == want["logprobs"]["tokens"]
        assert got["logprobs"]["token_logprobs"] == pytest.approx(
            want["logprobs"]["token_logprobs"], abs=1e-4
        )
    prompt_tokens = len(tiny_lm.tokenizer.encode(LONG_PROMPT))
    assert metric("prompt_tokens_total", model=remote.name, prefill="remote") == 2 * prompt_tokens
    assert metric("prompt_tokens_total", model=remote.name, prefill="local") == 0
    assert metric("kv_transfer_bytes_total", model=remote.name) > bytes_before
    assert metric("time_to_first_token_seconds_count", model=remote.name, prefill="remote") == 2


def test_a_new_client_of_a_restarted_worker_connects_at_once(prefill_lm: Any, tiny_lm: Any) -> None:
    """A prefill worker back on the same host and port is usable by a new client right away: the client
    does not inherit another channel's failed connection to that address and its backoff (gRPC shares
    connections per address across channels unless told not to; the suite once failed on a recycled
    port this way)."""
    first = start_server(prefill_lm, PrefillServerConfig(host="127.0.0.1", port=0))
    target = f"127.0.0.1:{first.port}"
    first.stop(0)
    with PrefillClient(target, tiny_lm, timeout_s=5.0) as stale:  # still open, as another test's was
        with pytest.raises(KVProtocolError):
            stale.probe()  # a refused connection to the dead address, then gRPC's reconnect backoff
        again = start_server(prefill_lm, PrefillServerConfig(host="127.0.0.1", port=first.port))
        try:
            with PrefillClient(target, tiny_lm, timeout_s=5.0) as fresh:
                assert fresh.probe().problem is None
        finally:
            again.stop(0)


def test_prompts_below_the_threshold_prefill_locally(decode_server, prefill_worker, tiny_lm) -> None:
    server = remote_server(decode_server, tiny_lm, prefill_worker, remote_prefill_min_tokens=32)
    assert complete(server, SHORT_PROMPT).status_code == 200
    short_tokens = len(tiny_lm.tokenizer.encode(SHORT_PROMPT))
    assert metric("prompt_tokens_total", model=server.name, prefill="local") == short_tokens
    assert metric("prompt_tokens_total", model=server.name, prefill="remote") == 0
    assert metric("kv_transfer_bytes_total", model=server.name) == 0


def test_prefill_worker_dies_mid_stream_fallback_local_completes(
    decode_server, prefill_worker, tiny_lm, prefill_lm
) -> None:
    reference = decode_server()
    server = remote_server(
        decode_server,
        tiny_lm,
        prefill_worker,
        remote_prefill_min_tokens=8,
        fallback="local",
    )
    want = complete(reference, LONG_PROMPT).json()["choices"][0]["text"]
    kill_during_prefill(prefill_lm, prefill_worker)
    reply = complete(server, LONG_PROMPT)
    assert reply.status_code == 200 and reply.json()["choices"][0]["text"] == want
    assert metric("prefill_fallback_total", model=server.name, reason="unreachable") == 1
    assert metric("prompt_tokens_total", model=server.name, prefill="local") > 0
    again = complete(server, LONG_PROMPT)  # the worker is gone for good: local again, still correct
    assert again.json()["choices"][0]["text"] == want
    with server.client() as client:
        ready = client.get("/ready")
    assert ready.status_code == 200 and "prefill locally" in ready.json()["detail"]
    assert ready.json()["prefill"] == "unreachable" and ready.json()["remote"] is False


def test_prefill_worker_dies_mid_stream_fallback_fail_is_a_clean_503(
    decode_server, prefill_worker, tiny_lm, prefill_lm
) -> None:
    server = remote_server(
        decode_server,
        tiny_lm,
        prefill_worker,
        remote_prefill_min_tokens=8,
        fallback="fail",
    )
    kill_during_prefill(prefill_lm, prefill_worker)
    with server.client() as client:
        body = {"model": server.name, "prompt": LONG_PROMPT, "max_tokens": 4, "stream": True}
        failed = client.post("/v1/completions", json=body)
        short = client.post("/v1/completions", json={**body, "prompt": SHORT_PROMPT, "stream": False})
        ready = client.get("/ready")
    assert failed.status_code == 503
    assert failed.json()["error"]["code"] == "prefill_unavailable"
    assert "fallback fail" in failed.json()["error"]["message"]
    assert short.status_code == 200  # short prompts never needed the prefill worker
    assert ready.status_code == 503 and "unreachable" in ready.json()["detail"]
    assert metric("requests_total", model=server.name, outcome="unavailable") == 1
    wait_for(lambda: metric("requests_running", model=server.name) == 0, "the slot to be released")


def test_ready_reports_a_reachable_prefill_worker(decode_server, prefill_worker, tiny_lm) -> None:
    server = remote_server(decode_server, tiny_lm, prefill_worker, fallback="fail")
    with server.client() as client:
        ready = client.get("/ready")
    assert ready.status_code == 200 and ready.json()["prefill"] == "ready"


def test_a_prefill_worker_that_is_too_slow_times_out_into_a_local_prefill(
    decode_server, prefill_worker, tiny_lm, prefill_gate
) -> None:
    target = f"127.0.0.1:{prefill_worker.port}"
    client = PrefillClient(target, tiny_lm, timeout_s=0.5)
    server = decode_server(client, prefill=target, remote_prefill_min_tokens=8)
    replies: list[Any] = []
    sender = threading.Thread(target=lambda: replies.append(complete(server, LONG_PROMPT, max_tokens=3)))
    sender.start()  # the prefill worker's forward pass waits in the gate past the 0.5 s deadline
    labels = {"model": server.name, "reason": "timeout"}
    wait_for(lambda: sample_value("hybrid_inference_prefill_fallback_total", labels) == 1, "the timeout")
    prefill_gate.open()
    sender.join(60)
    assert replies[0].status_code == 200, replies[0].text
    assert replies[0].json()["usage"]["completion_tokens"] == 3
    assert metric("prompt_tokens_total", model=server.name, prefill="local") > 0


def test_concurrent_remote_prefills_each_get_their_own_cache(decode_server, prefill_worker, tiny_lm) -> None:
    local = decode_server()
    remote = remote_server(
        decode_server, tiny_lm, prefill_worker, remote_prefill_min_tokens=8, max_concurrency=4
    )
    prompts = [f"{LONG_PROMPT} Variant {i}." for i in range(4)]
    want = [complete(local, p).json()["choices"][0]["text"] for p in prompts]
    got: dict[int, str] = {}

    def send(index: int) -> None:
        got[index] = complete(remote, prompts[index]).json()["choices"][0]["text"]

    threads = [threading.Thread(target=send, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert [got[i] for i in range(4)] == want
    assert metric("kv_transfer_seconds_count", model=remote.name) == 4
    assert metric("kv_exposed_transfer_seconds_count", model=remote.name) == 4


@pytest.mark.parametrize("knob", ["temperature", "top_p"])
def test_a_tiny_temperature_or_top_p_prefills_remotely_without_a_fallback(
    decode_server, tiny_lm, prefill_worker, knob
) -> None:
    server = remote_server(
        decode_server, tiny_lm, prefill_worker, remote_prefill_min_tokens=8, fallback="fail"
    )
    greedy = complete(server, LONG_PROMPT)
    tiny = complete(server, LONG_PROMPT, **{"temperature": 1.0, knob: 5e-324, "seed": 2**63 - 1})
    assert tiny.status_code == 200, tiny.text
    assert tiny.json()["choices"][0]["text"] == greedy.json()["choices"][0]["text"]
    fallbacks = [
        metric("prefill_fallback_total", model=server.name, reason=r) for r in ("error", "unreachable")
    ]
    assert fallbacks == [0, 0]
    assert metric("prompt_tokens_total", model=server.name, prefill="remote") > 0


def test_input_the_wire_cannot_carry_is_a_400_before_any_grpc_call(
    decode_server, tiny_lm, prefill_worker
) -> None:
    server = remote_server(
        decode_server, tiny_lm, prefill_worker, remote_prefill_min_tokens=8, fallback="fail"
    )
    refused = complete(server, LONG_PROMPT, seed=2**63)
    huge_top_k = complete(server, LONG_PROMPT, temperature=0.8, seed=1, top_k=2**40)  # the whole vocabulary
    assert refused.status_code == 400 and refused.json()["error"]["param"] == "seed"
    assert huge_top_k.status_code == 200, huge_top_k.text
    assert metric("prefill_tokens_total", model=prefill_worker.servicer.model_label) > 0
    with server.client() as client:
        assert client.get("/ready").status_code == 200
    reasons = ("error", "unreachable", "timeout", "protocol")
    assert [metric("prefill_fallback_total", model=server.name, reason=r) for r in reasons] == [0, 0, 0, 0]
