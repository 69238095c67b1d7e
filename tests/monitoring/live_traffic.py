"""A scripted mix of requests for the live-Prometheus test, sent with the official openai client.

Nothing here is timed: the test compares what Prometheus stored with what the workers exposed and
with the counts of requests sent, never with a clock of its own.
"""

from __future__ import annotations

from dataclasses import dataclass

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


def client(base_url: str) -> openai.OpenAI:
    """An openai client for a decode worker at http://HOST:PORT."""
    return openai.OpenAI(base_url=base_url + "/v1", api_key="unused", max_retries=0, timeout=120)


def model_id(api: openai.OpenAI) -> str:
    """The one model the worker serves."""
    return api.models.list().data[0].id


def stream_completion(api: openai.OpenAI, model: str, prompt: str, max_tokens: int) -> None:
    """A streaming completion, read to its end; fails unless some text streamed."""
    streamed = False
    stream = api.completions.create(
        model=model, prompt=prompt, max_tokens=max_tokens, stream=True, temperature=0
    )
    for chunk in stream:
        streamed = streamed or bool(chunk.choices and chunk.choices[0].text)
    assert streamed, f"no text streamed for prompt {prompt[:30]!r}"


def stream_chat(api: openai.OpenAI, model: str, prompt: str, max_tokens: int) -> None:
    """A streaming chat completion, read to its end; fails unless some content streamed."""
    streamed = False
    messages = [{"role": "user", "content": prompt}]
    stream = api.chat.completions.create(
        model=model,
        messages=messages,
        max_tokens=max_tokens,
        stream=True,
        temperature=0,  # type: ignore[arg-type]
    )
    for chunk in stream:
        streamed = streamed or bool(chunk.choices and chunk.choices[0].delta.content)
    assert streamed, f"no content streamed for prompt {prompt[:30]!r}"


def serve_batch(api: openai.OpenAI, model: str, traffic: Traffic, rounds: int = 3) -> None:
    """Streaming long (remote prefill) and short (local) completions and chats, and one bad request."""
    for i in range(rounds):
        stream_completion(api, model, LONG_PROMPT, max_tokens=6 + 2 * i)
        stream_completion(api, model, SHORT_PROMPT, max_tokens=8)
        stream_chat(api, model, LONG_PROMPT, max_tokens=6)
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
