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
    assert reply["usage"] == {"prompt_tokens": len(prompt_ids), "completion_tokens": 12, "total_tokens": len(prompt_ids) + 12}
    assert len(choice["logprobs"]["token_logprobs"]) == 12
