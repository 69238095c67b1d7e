"""Streaming details: echo, per-token logprobs, usage chunk, and an error after the first token."""

from __future__ import annotations

import json
from typing import Any

from decode_servers import wait_for
from hybrid_workers.metrics import sample_value

PROMPT = "Streaming sends one chunk per token"


def events(client: Any, path: str, body: dict[str, Any]) -> list[Any]:
    """The data payloads of an SSE response ("[DONE]" kept as the string)."""
    out = []
    with client.stream("POST", path, json={**body, "stream": True}) as response:
        assert response.status_code == 200
        for line in response.iter_lines():
            if line.startswith("data: "):
                data = line[6:]
                out.append(data if data == "[DONE]" else json.loads(data))
    return out


def test_streamed_echo_and_per_token_logprobs_match_the_plain_response(decode_server) -> None:
    server = decode_server()
    body = {"model": server.name, "prompt": PROMPT, "max_tokens": 6, "temperature": 0, "logprobs": 0}
    with server.client() as client:
        plain = client.post("/v1/completions", json=body).json()["choices"][0]
        with_logprobs = [e["choices"][0] for e in events(client, "/v1/completions", body)[:-1]]
        echoed = [
            e["choices"][0]
            for e in events(client, "/v1/completions", {**body, "logprobs": None, "echo": True})[:-1]
        ]
    streamed_logprobs = [lp for c in with_logprobs for lp in c["logprobs"]["token_logprobs"]]
    assert streamed_logprobs == plain["logprobs"]["token_logprobs"]
    assert echoed[0]["text"] == PROMPT
    assert (
        "".join(c["text"] for c in echoed[1:]) == "".join(c["text"] for c in with_logprobs) == plain["text"]
    )


def test_chat_stream_logprobs_and_usage_chunk(decode_server) -> None:
    server = decode_server()
    body = {
        "model": server.name,
        "messages": [{"role": "user", "content": [{"type": "text", "text": "Hi"}]}],
        "max_tokens": 4,
        "temperature": 0,
        "logprobs": True,
        "stream_options": {"include_usage": True},
    }
    with server.client() as client:
        streamed = events(client, "/v1/chat/completions", body)
    assert streamed[-1] == "[DONE]"
    usage = streamed[-2]
    assert usage["choices"] == [] and usage["usage"]["completion_tokens"] == len(streamed) - 3
    token_chunks = streamed[1:-2]
    assert all(len(c["choices"][0]["logprobs"]["content"]) == 1 for c in token_chunks)
    assert token_chunks[-1]["choices"][0]["finish_reason"] in ("stop", "length")


def test_a_failure_after_the_first_token_ends_the_stream_with_an_error_event_and_done(
    decode_server, monkeypatch
) -> None:
    server = decode_server()
    real = server.worker.engine.sample

    def breaks_after_two(logits: Any, params: Any, step: int) -> Any:
        if step == 2:
            raise RuntimeError("device lost")
        return real(logits, params, step)

    monkeypatch.setattr(server.worker.engine, "sample", breaks_after_two)
    body = {"model": server.name, "prompt": PROMPT, "max_tokens": 8, "temperature": 0}
    with server.client() as client:
        streamed = events(client, "/v1/completions", body)
    assert streamed[-1] == "[DONE]"  # the client sees the end of the stream
    assert [bool(e.get("choices")) for e in streamed[:-1]] == [True, True, False]
    assert "device lost" in streamed[-2]["error"]["message"]
    labels = {"model": server.name, "outcome": "error"}
    wait_for(lambda: sample_value("hybrid_inference_requests_total", labels) == 1, "the error to be counted")


def test_a_streamed_echo_of_zero_tokens_still_ends_with_a_finish_reason(decode_server) -> None:
    server = decode_server()
    body = {"model": server.name, "prompt": PROMPT, "max_tokens": 0, "echo": True}
    with server.client() as client:
        streamed = events(client, "/v1/completions", body)
    assert [e["choices"][0]["text"] for e in streamed[:-1]] == [PROMPT, ""]
    assert streamed[-2]["choices"][0]["finish_reason"] == "length" and streamed[-1] == "[DONE]"
