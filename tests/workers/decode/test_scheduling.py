"""Many clients at once: correct answers under concurrency, 429 beyond the queue, disconnects free slots."""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from typing import Any

import httpx
from decode_servers import wait_for
from hybrid_workers.metrics import sample_value

PROMPTS = [f"Client number {i} asks about layer {i % 5} of the cache" for i in range(16)]


def metric(name: str, **labels: str) -> float:
    return sample_value("hybrid_inference_" + name, labels)


async def stream_text(client: httpx.AsyncClient, model: str, prompt: str) -> tuple[str, str | None]:
    """Stream one greedy completion; returns its text and finish reason."""
    body = {"model": model, "prompt": prompt, "max_tokens": 12, "temperature": 0, "stream": True}
    text, finish = "", None
    async with client.stream("POST", "/v1/completions", json=body) as response:
        assert response.status_code == 200
        async for line in response.aiter_lines():
            if line.startswith("data: {"):
                choice = json.loads(line[6:])["choices"][0]
                text += choice["text"]
                finish = choice["finish_reason"] or finish
    return text, finish


def test_sixteen_concurrent_streaming_clients_all_get_their_own_complete_answer(decode_server) -> None:
    server = decode_server(max_concurrency=4, max_queue=16)
    with server.client() as client:
        expected = []
        for prompt in PROMPTS:
            body = {"model": server.name, "prompt": prompt, "max_tokens": 12, "temperature": 0}
            expected.append(client.post("/v1/completions", json=body).json()["choices"][0])

    async def all_at_once() -> list[tuple[str, str | None]]:
        async with httpx.AsyncClient(base_url=server.url, timeout=120) as client:
            return await asyncio.gather(*(stream_text(client, server.name, p) for p in PROMPTS))

    results = asyncio.run(all_at_once())
    assert [text for text, _ in results] == [e["text"] for e in expected]
    assert [finish for _, finish in results] == [e["finish_reason"] for e in expected]
    assert metric("requests_total", model=server.name, outcome="success") == 32
    # A slot is released when its thread has ended, a moment after the client got [DONE].
    wait_for(lambda: metric("requests_running", model=server.name) == 0, "all slots to be released")
    assert metric("requests_waiting", model=server.name) == 0


def test_a_full_queue_answers_429_with_retry_after(decode_server, forward_gate) -> None:
    server = decode_server(max_concurrency=1, max_queue=1)
    body = {"model": server.name, "prompt": "hold the slot", "max_tokens": 3, "temperature": 0}
    replies: dict[str, httpx.Response] = {}

    def send(key: str) -> None:
        with server.client() as client:
            replies[key] = client.post("/v1/completions", json=body)

    running = threading.Thread(target=send, args=("running",))
    running.start()  # its prefill blocks in the gate: it holds the only slot
    wait_for(lambda: metric("requests_running", model=server.name) == 1, "the first request to run")
    waiting = threading.Thread(target=send, args=("waiting",))
    waiting.start()
    wait_for(lambda: metric("requests_waiting", model=server.name) == 1, "the second request to queue")
    with server.client() as client:
        refused = client.post("/v1/completions", json=body)
    forward_gate.open()
    running.join(60)
    waiting.join(60)
    assert refused.status_code == 429
    assert int(refused.headers["retry-after"]) >= 1
    assert refused.json()["error"]["code"] == "queue_full"
    assert replies["running"].status_code == replies["waiting"].status_code == 200
    assert metric("requests_total", model=server.name, outcome="rejected") == 1


def test_a_client_that_disconnects_mid_stream_frees_its_slot(decode_server, forward_gate) -> None:
    server = decode_server(max_concurrency=1, max_queue=4)
    max_tokens = 200
    body = {"model": server.name, "prompt": "a long answer please", "max_tokens": max_tokens, "stream": True}
    body["temperature"] = 0  # greedy: no EOS among the first tokens of this prompt (sampling could end early)
    forward_gate.allow(3)  # prefill + 2 decode steps, then the next forward pass waits
    with server.client() as client, client.stream("POST", "/v1/completions", json=body) as response:
        tokens = 0
        for line in response.iter_lines():
            tokens += line.startswith("data: {")
            if tokens == 3:
                break  # leaving the block closes the connection mid-stream
    wait_for(lambda: metric("requests_total", model=server.name, outcome="cancelled") == 1, "the cancel")
    forward_gate.allow(1)  # the thread finishes the forward pass it waits in, sees the cancel flag, ends
    wait_for(lambda: metric("requests_running", model=server.name) == 0, "the slot to be freed")
    # 3 passes for the tokens read; at most the one already waiting in the gate ran after the cancel.
    assert forward_gate.passed <= 4
    forward_gate.open()
    with server.client() as client:
        follow_up = client.post("/v1/completions", json={**body, "stream": False, "max_tokens": 5})
    assert follow_up.status_code == 200
    assert follow_up.json()["usage"]["completion_tokens"] == 5
    assert metric("generation_tokens_total", model=server.name, prefill="local") < max_tokens


def test_a_non_streaming_client_that_gives_up_is_cancelled_too(decode_server, forward_gate) -> None:
    server = decode_server(max_concurrency=1)
    body = {"model": server.name, "prompt": "never mind", "max_tokens": 50}
    with server.client(timeout=0.5) as client, contextlib.suppress(httpx.TimeoutException):
        client.post("/v1/completions", json=body)
    wait_for(lambda: metric("requests_total", model=server.name, outcome="cancelled") == 1, "the cancel")
    forward_gate.open()
    wait_for(lambda: metric("requests_running", model=server.name) == 0, "the slot to be freed")
    assert forward_gate.passed <= 2


def test_one_failing_request_does_not_affect_the_others(decode_server, monkeypatch) -> None:
    server = decode_server(max_concurrency=2)
    engine = server.worker.engine
    real = engine.sample

    def flaky(logits: Any, params: Any, step: int) -> Any:
        if params.seed == 666:
            raise RuntimeError("boom")
        return real(logits, params, step)

    monkeypatch.setattr(engine, "sample", flaky)
    body = {"model": server.name, "prompt": "hello", "max_tokens": 4, "temperature": 0}
    with server.client() as client:
        failed = client.post("/v1/completions", json={**body, "seed": 666})
        fine = client.post("/v1/completions", json=body)
    assert failed.status_code == 500 and failed.json()["error"]["type"] == "server_error"
    assert "boom" in failed.json()["error"]["message"]
    assert fine.status_code == 200
    assert metric("requests_total", model=server.name, outcome="error") == 1
    wait_for(lambda: metric("requests_running", model=server.name) == 0, "the slots to be released")


def test_a_full_batch_and_a_full_queue_answer_429_and_everyone_admitted_finishes(
    decode_server, forward_gate
) -> None:
    server = decode_server(max_concurrency=2, max_queue=1)
    body = {"model": server.name, "prompt": "hold the batch", "max_tokens": 3, "temperature": 0}
    replies: list[httpx.Response] = []

    def send() -> None:
        with server.client() as client:
            replies.append(client.post("/v1/completions", json=body))

    senders = [threading.Thread(target=send) for _ in range(3)]
    for index, sender in enumerate(senders):
        sender.start()  # the engine loop waits in the gate: two hold the batch's slots, one queues
        if index < 2:
            wait_for(lambda i=index: metric("requests_running", model=server.name) == i + 1, "a slot taken")
    wait_for(lambda: metric("requests_waiting", model=server.name) == 1, "the third request to queue")
    with server.client() as client:
        refused = client.post("/v1/completions", json=body)
    forward_gate.open()
    for sender in senders:
        sender.join(60)
    assert refused.status_code == 429 and int(refused.headers["retry-after"]) >= 1
    assert [r.status_code for r in replies] == [200, 200, 200]
    assert len({r.json()["choices"][0]["text"] for r in replies}) == 1  # same prompt, same greedy answer


def test_concurrent_requests_are_decoded_in_one_batch_and_the_capacity_gauges_follow(
    decode_server, forward_gate
) -> None:
    server = decode_server(max_concurrency=4, kv_cache_bytes=64 << 20)
    steps: list[int] = []
    server.worker.engine_loop.listeners.append(lambda e: steps.append(e.batch) if e.kind == "step" else None)
    body = {"model": server.name, "max_tokens": 6, "temperature": 0}
    replies: list[httpx.Response] = []

    def send(prompt: str) -> None:
        with server.client() as client:
            replies.append(client.post("/v1/completions", json={**body, "prompt": prompt}))

    senders = [threading.Thread(target=send, args=(p,)) for p in PROMPTS[:3]]
    for sender in senders:
        sender.start()  # the engine loop waits in the gate: all three reserve their KV meanwhile
    wait_for(lambda: metric("requests_running", model=server.name) == 3, "three requests admitted")
    worker = server.worker
    lengths = [len(worker.lm.tokenizer(p)["input_ids"]) + body["max_tokens"] for p in PROMPTS[:3]]
    reserved = worker.engine.kv_bytes_per_token * sum(lengths)
    wait_for(lambda: worker.budget.used_bytes == reserved, "all three to reserve their KV")
    wait_for(lambda: worker.engine_loop.sequences == 3, "all three handed to the engine loop")
    assert metric("kv_cache_budget_bytes", model=server.name) == 64 << 20
    assert 0 < metric("kv_cache_usage_ratio", model=server.name) < 1
    forward_gate.open()
    for sender in senders:
        sender.join(60)
    assert [r.status_code for r in replies] == [200, 200, 200]
    assert max(steps) == 3  # one forward pass for all three
    wait_for(lambda: metric("kv_cache_usage_ratio", model=server.name) == 0, "KV released")
    assert metric("batch_size", model=server.name) == 0
