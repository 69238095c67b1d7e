"""A scripted mix of requests for the live-Prometheus test, sent with the official openai client.

Streaming requests record the client-side time to the first non-empty token: the server's TTFT
interval (request arrival to first token leaving) lies inside it, so server TTFT <= client TTFT.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import openai

# The demo tokenizer makes roughly one token per short word; 80 words is far above the test's
# --remote-prefill-min-tokens (16) and far below the tiny model's context (512).
LONG_PROMPT = " ".join(["the quick brown fox jumps over the lazy dog"] * 9)
SHORT_PROMPT = "hello there"


@dataclass
class Traffic:
    """What one worker was sent and what the client saw."""

    ok: int = 0  # requests that finished
    invalid: int = 0  # requests the server refused with a 4xx
    long_prompts: int = 0  # finished requests whose prompt is above the remote-prefill threshold
    ttfts: list[float] = field(default_factory=list)  # client-measured TTFT of each streaming request


def client(base_url: str) -> openai.OpenAI:
    """An openai client for a decode worker at http://HOST:PORT."""
    return openai.OpenAI(base_url=base_url + "/v1", api_key="unused", max_retries=0, timeout=120)


def model_id(api: openai.OpenAI) -> str:
    """The one model the worker serves."""
    return api.models.list().data[0].id


def stream_completion(api: openai.OpenAI, model: str, prompt: str, max_tokens: int) -> float:
    """A streaming completion; returns seconds from sending it to the first non-empty text."""
    start = time.perf_counter()
    first: float | None = None
    stream = api.completions.create(
        model=model, prompt=prompt, max_tokens=max_tokens, stream=True, temperature=0
    )
    for chunk in stream:
        if first is None and chunk.choices and chunk.choices[0].text:
            first = time.perf_counter() - start
    assert first is not None, f"no text streamed for prompt {prompt[:30]!r}"
    return first


def stream_chat(api: openai.OpenAI, model: str, prompt: str, max_tokens: int) -> float:
    """A streaming chat completion; returns seconds from sending it to the first non-empty content."""
    start = time.perf_counter()
    first: float | None = None
    messages = [{"role": "user", "content": prompt}]
    stream = api.chat.completions.create(
        model=model,
        messages=messages,
        max_tokens=max_tokens,
        stream=True,
        temperature=0,  # type: ignore[arg-type]
    )
    for chunk in stream:
        if first is None and chunk.choices and chunk.choices[0].delta.content:
            first = time.perf_counter() - start
    assert first is not None, f"no content streamed for prompt {prompt[:30]!r}"
    return first


def serve_batch(api: openai.OpenAI, model: str, traffic: Traffic, rounds: int = 3) -> None:
    """Streaming long (remote prefill) and short (local) completions and chats, and one bad request."""
    for i in range(rounds):
        traffic.ttfts.append(stream_completion(api, model, LONG_PROMPT, max_tokens=6 + 2 * i))
        traffic.ttfts.append(stream_completion(api, model, SHORT_PROMPT, max_tokens=8))
        traffic.ttfts.append(stream_chat(api, model, LONG_PROMPT, max_tokens=6))
        traffic.ok += 3
        traffic.long_prompts += 2
    try:
        api.completions.create(model=model, prompt=SHORT_PROMPT, max_tokens=-1)
    except openai.BadRequestError:
        traffic.invalid += 1


def fallback_batch(api: openai.OpenAI, model: str, traffic: Traffic, rounds: int = 2) -> None:
    """Non-streaming long prompts (each falls back to local prefill: its peer is dead) and a short one."""
    for _ in range(rounds):
        api.completions.create(model=model, prompt=LONG_PROMPT, max_tokens=4, temperature=0)
        traffic.ok += 1
        traffic.long_prompts += 1
    api.completions.create(model=model, prompt=SHORT_PROMPT, max_tokens=4, temperature=0)
    traffic.ok += 1
