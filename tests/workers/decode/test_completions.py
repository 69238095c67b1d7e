"""The HTTP API's answers: greedy output equals transformers `generate`, usage, logprobs, echo, chat."""

from __future__ import annotations

import json
from typing import Any

import pytest
import torch

PROMPT = "The prefill worker computes the cache of the prompt"


def reference_greedy(lm: Any, prompt_ids: list[int], max_new_tokens: int) -> list[int]:
    """Greedy continuation by transformers' own generate (ignoring EOS, so the length is fixed)."""
    ids = torch.tensor([prompt_ids])
    with torch.no_grad():
        out = lm.model.generate(
            ids, max_new_tokens=max_new_tokens, do_sample=False, eos_token_id=None, pad_token_id=0
        )
    return out[0, len(prompt_ids) :].tolist()


def sse_events(response: Any) -> list[Any]:
    """The JSON payloads of an SSE response, then the literal "[DONE]" when present."""
    events = []
    for line in response.iter_lines():
        if line.startswith("data: "):
            data = line[len("data: ") :]
            events.append(data if data == "[DONE]" else json.loads(data))
    return events


def test_greedy_completion_equals_transformers_generate(decode_server, tiny_lm) -> None:
    server = decode_server()
    prompt_ids = tiny_lm.tokenizer.encode(PROMPT)
    expected = reference_greedy(tiny_lm, prompt_ids, 12)
    if any(t in tiny_lm.eos_token_ids for t in expected):
        pytest.skip("reference hits EOS; pick another prompt")
    with server.client() as client:
        body = {"model": server.name, "prompt": PROMPT, "max_tokens": 12, "temperature": 0, "logprobs": 0}
        reply = client.post("/v1/completions", json=body).json()
    choice = reply["choices"][0]
    assert choice["text"] == tiny_lm.tokenizer.decode(expected, skip_special_tokens=True)
    assert choice["finish_reason"] == "length"
    assert reply["usage"] == {
        "prompt_tokens": len(prompt_ids),
        "completion_tokens": 12,
        "total_tokens": len(prompt_ids) + 12,
    }
    assert len(choice["logprobs"]["token_logprobs"]) == 12


def test_streamed_text_equals_non_streamed_text_and_ends_with_done(decode_server) -> None:
    server = decode_server()
    body = {"model": server.name, "prompt": PROMPT, "max_tokens": 10, "temperature": 0}
    with server.client() as client:
        whole = client.post("/v1/completions", json=body).json()["choices"][0]
        options = {"include_usage": True}
        with client.stream(
            "POST", "/v1/completions", json={**body, "stream": True, "stream_options": options}
        ) as r:
            assert r.headers["content-type"].startswith("text/event-stream")
            events = sse_events(r)
    assert events[-1] == "[DONE]"
    chunks = [e for e in events[:-1] if e["choices"]]
    assert "".join(c["choices"][0]["text"] for c in chunks) == whole["text"]
    assert chunks[-1]["choices"][0]["finish_reason"] == whole["finish_reason"]
    assert events[-2]["usage"]["completion_tokens"] == 10


def test_chat_uses_the_tokenizer_chat_template(decode_server, tiny_lm) -> None:
    server = decode_server()
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "What is decode?"}]
    text = tiny_lm.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    prompt_ids = tiny_lm.tokenizer(text, add_special_tokens=False)["input_ids"]
    expected = reference_greedy(tiny_lm, prompt_ids, 8)
    stop_at = next((i for i, t in enumerate(expected) if t in tiny_lm.eos_token_ids), len(expected))
    with server.client() as client:
        body = {"model": server.name, "messages": messages, "max_completion_tokens": 8, "temperature": 0}
        reply = client.post("/v1/chat/completions", json=body).json()
        with client.stream("POST", "/v1/chat/completions", json={**body, "stream": True}) as r:
            events = sse_events(r)
    message = reply["choices"][0]["message"]
    assert message["role"] == "assistant"
    assert message["content"] == tiny_lm.tokenizer.decode(expected[:stop_at], skip_special_tokens=True)
    assert reply["usage"]["prompt_tokens"] == len(prompt_ids)
    assert reply["object"] == "chat.completion"
    assert events[0]["choices"][0]["delta"]["role"] == "assistant"
    streamed = "".join(e["choices"][0]["delta"].get("content", "") for e in events[:-1])
    assert streamed == message["content"]


def test_echo_with_logprobs_scores_the_prompt_like_lm_eval(decode_server, tiny_lm) -> None:
    """lm-eval local-completions: token-id prompt, echo, logprobs=1, max_tokens=0 (or 1)."""
    server = decode_server()
    prompt_ids = tiny_lm.tokenizer.encode(PROMPT)
    with torch.no_grad():
        logits = tiny_lm.model(torch.tensor([prompt_ids])).logits[0].float()
    expected = torch.log_softmax(logits[:-1], -1).gather(1, torch.tensor(prompt_ids[1:])[:, None])[:, 0]
    with server.client() as client:
        body = {"model": server.name, "prompt": [prompt_ids], "echo": True, "logprobs": 1, "max_tokens": 0}
        reply = client.post("/v1/completions", json=body).json()
    logprobs = reply["choices"][0]["logprobs"]
    assert reply["usage"]["completion_tokens"] == 0
    assert len(logprobs["tokens"]) == len(prompt_ids) == len(logprobs["top_logprobs"])
    assert logprobs["token_logprobs"][0] is None
    assert logprobs["token_logprobs"][1:] == pytest.approx(expected.tolist(), abs=1e-4)
    for token_logprob, top in zip(logprobs["token_logprobs"][1:], logprobs["top_logprobs"][1:], strict=True):
        assert max(top.values()) >= token_logprob - 1e-6
    assert reply["choices"][0]["text"] == tiny_lm.tokenizer.decode(prompt_ids, skip_special_tokens=True)


def test_top_logprobs_hold_the_greedy_token_first(decode_server) -> None:
    server = decode_server()
    with server.client() as client:
        body = {"model": server.name, "prompt": PROMPT, "max_tokens": 5, "temperature": 0, "logprobs": 3}
        completion = client.post("/v1/completions", json=body).json()["choices"][0]["logprobs"]
        chat_body = {
            "model": server.name,
            "messages": [{"role": "user", "content": "hi"}],
            "max_tokens": 4,
            "temperature": 0,
            "logprobs": True,
            "top_logprobs": 2,
        }
        chat = client.post("/v1/chat/completions", json=chat_body).json()["choices"][0]["logprobs"]
    for token, logprob, top in zip(
        completion["tokens"], completion["token_logprobs"], completion["top_logprobs"], strict=True
    ):
        assert len(top) == 3 and max(top, key=top.get) == token and top[token] == logprob
    for entry in chat["content"]:
        assert len(entry["top_logprobs"]) == 2
        assert entry["top_logprobs"][0]["token"] == entry["token"]
        assert entry["bytes"] == list(own_bytes(entry["token"]))


def own_bytes(label: str) -> bytes:
    """The bytes a logprobs token name stands for (`bytes:\\xNN...` for part of a character)."""
    if label.startswith("bytes:"):
        return bytes.fromhex(label[len("bytes:") :].replace("\\x", ""))
    return label.encode()


def test_seeded_sampling_repeats_and_stop_strings_cut(decode_server) -> None:
    server = decode_server()
    body = {
        "model": server.name,
        "prompt": PROMPT,
        "max_tokens": 12,
        "temperature": 0.9,
        "seed": 7,
        "top_k": 50,
    }
    with server.client() as client:
        first = client.post("/v1/completions", json=body).json()["choices"][0]["text"]
        again = client.post("/v1/completions", json=body).json()["choices"][0]["text"]
        assert first == again
        stop = first.strip()[len(first.strip()) // 2 :][:2]
        cut = client.post("/v1/completions", json={**body, "stop": [stop]}).json()["choices"][0]
    assert cut["finish_reason"] == "stop"
    assert stop not in cut["text"] and first.startswith(cut["text"])


def test_official_openai_client_streams_and_counts(decode_server) -> None:
    openai = pytest.importorskip("openai")
    server = decode_server()
    client = openai.OpenAI(base_url=server.url + "/v1", api_key="unused")
    assert [m.id for m in client.models.list().data] == [server.name]
    chat = client.chat.completions.create(
        model=server.name, messages=[{"role": "user", "content": "Hello"}], max_tokens=6, temperature=0
    )
    stream = client.completions.create(
        model=server.name, prompt=PROMPT, max_tokens=6, temperature=0, stream=True
    )
    text = "".join(chunk.choices[0].text for chunk in stream if chunk.choices)
    plain = client.completions.create(model=server.name, prompt=PROMPT, max_tokens=6, temperature=0)
    assert chat.usage.total_tokens == chat.usage.prompt_tokens + chat.usage.completion_tokens
    assert text == plain.choices[0].text
    with pytest.raises(openai.BadRequestError) as caught:
        client.completions.create(model=server.name, prompt=PROMPT, n=2)
    assert "n 2" in str(caught.value)
