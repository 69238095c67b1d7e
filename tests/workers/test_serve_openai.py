"""The official `openai` client against a running `hybrid-inference serve` (tiny demo model, CPU, float32).

Every prompt here prefills on the prefill worker (--remote-prefill-min-tokens 1), so the answers prove
the whole path: HTTP API -> gRPC KV stream -> decode; greedy output must equal transformers' `generate`.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
import torch
from support.serve import RunningServe, running_serve

pytestmark = pytest.mark.slow

PROMPT = "The KV cache of each layer"
CHAT = [{"role": "user", "content": "Tell me about prefill and decode."}]
MAX_TOKENS = 12
# serve's relay of the decode worker's per-request line (hybrid_workers.decode.stats.RequestStats.line).
REQUEST_LINE = (
    r"^decode\s+\| .*request \S+: success/(stop|length) prompt=(\d+) tokens prefill=remote "
    r"ttft=[0-9.]+s output=(\d+) tokens tps=[0-9.]+ kv_exposed=[0-9.]+ms"
)


@pytest.fixture(scope="module")
def serve(tiny_model_dir: Path) -> Iterator[RunningServe]:
    with running_serve(tiny_model_dir, "--remote-prefill-min-tokens", "1", "--fallback", "fail") as running:
        yield running


@pytest.fixture(scope="module")
def client(serve: RunningServe) -> openai.OpenAI:
    return openai.OpenAI(base_url=serve.base_url + "/v1", api_key="not-needed", max_retries=0, timeout=60)


@pytest.fixture(scope="module")
def model_id(client: openai.OpenAI) -> str:
    return client.models.list().data[0].id


def reference(tiny_lm: Any, prompt_ids: list[int]) -> tuple[list[int], str]:
    """Greedy continuation by transformers `generate` (EOS dropped) and its decoded text."""
    inputs = torch.tensor([prompt_ids])  # [1, prompt_len]
    with torch.no_grad():
        out = tiny_lm.model.generate(
            inputs, attention_mask=torch.ones_like(inputs), max_new_tokens=MAX_TOKENS, do_sample=False
        )
    new = [int(t) for t in out[0, len(prompt_ids) :] if int(t) not in tiny_lm.eos_token_ids]
    return new, tiny_lm.tokenizer.decode(new, skip_special_tokens=True)


def chat_prompt_ids(tiny_lm: Any) -> list[int]:
    """The chat prompt as transformers tokenizes it (template rendered, no extra special tokens)."""
    encoded = tiny_lm.tokenizer.apply_chat_template(CHAT, add_generation_prompt=True, return_dict=True)
    return [int(t) for t in encoded["input_ids"]]


def test_models_lists_the_served_model(client: openai.OpenAI, model_id: str) -> None:
    assert [m.id for m in client.models.list().data] == [model_id]


def test_completion_greedy_equals_generate_and_usage_counts(
    client: openai.OpenAI, model_id: str, tiny_lm: Any
) -> None:
    prompt_ids = tiny_lm.tokenizer.encode(PROMPT)
    expected_ids, expected_text = reference(tiny_lm, prompt_ids)
    response = client.completions.create(model=model_id, prompt=PROMPT, max_tokens=MAX_TOKENS, temperature=0)
    choice = response.choices[0]
    assert choice.text == expected_text
    assert choice.finish_reason == ("length" if len(expected_ids) == MAX_TOKENS else "stop")
    assert response.usage is not None
    assert (response.usage.prompt_tokens, response.usage.completion_tokens) == (
        len(prompt_ids),
        len(expected_ids),
    )
    assert response.usage.total_tokens == len(prompt_ids) + len(expected_ids)


def test_streamed_completion_equals_the_non_streamed_one(
    client: openai.OpenAI, model_id: str, tiny_lm: Any
) -> None:
    prompt_ids = tiny_lm.tokenizer.encode(PROMPT)
    expected_ids, expected_text = reference(tiny_lm, prompt_ids)
    stream = client.completions.create(
        model=model_id,
        prompt=PROMPT,
        max_tokens=MAX_TOKENS,
        temperature=0,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].text for c in chunks if c.choices)
    finish = [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason]
    assert text == expected_text
    assert finish == ["length" if len(expected_ids) == MAX_TOKENS else "stop"]
    usage = chunks[-1].usage
    assert usage is not None and (usage.prompt_tokens, usage.completion_tokens) == (
        len(prompt_ids),
        len(expected_ids),
    )


def test_chat_greedy_equals_generate_on_the_chat_template(
    client: openai.OpenAI, model_id: str, tiny_lm: Any
) -> None:
    prompt_ids = chat_prompt_ids(tiny_lm)
    expected_ids, expected_text = reference(tiny_lm, prompt_ids)
    response = client.chat.completions.create(
        model=model_id,
        messages=CHAT,  # type: ignore[arg-type]
        max_tokens=MAX_TOKENS,
        temperature=0,
    )
    assert response.choices[0].message.role == "assistant"
    assert response.choices[0].message.content == expected_text
    assert response.usage is not None
    assert (response.usage.prompt_tokens, response.usage.completion_tokens) == (
        len(prompt_ids),
        len(expected_ids),
    )


def test_streamed_chat_sends_the_role_then_the_same_text(
    client: openai.OpenAI, model_id: str, tiny_lm: Any
) -> None:
    _, expected_text = reference(tiny_lm, chat_prompt_ids(tiny_lm))
    chunks = list(
        client.chat.completions.create(
            model=model_id,
            messages=CHAT,  # type: ignore[arg-type]
            max_tokens=MAX_TOKENS,
            temperature=0,
            stream=True,
        )
    )
    assert chunks[0].choices[0].delta.role == "assistant"
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == expected_text
    assert chunks[-1].choices[0].finish_reason in ("stop", "length")


def test_unknown_model_is_a_404_openai_error(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        client.completions.create(model="no-such-model", prompt=PROMPT, max_tokens=2)
    assert "no-such-model" in str(caught.value)


def test_serve_relays_one_line_per_request_with_ttft_tps_and_kv(
    serve: RunningServe, client: openai.OpenAI, model_id: str, tiny_lm: Any
) -> None:
    start = len(serve.lines)
    prompt = PROMPT + " is streamed while the next layer computes"
    client.completions.create(model=model_id, prompt=prompt, max_tokens=5, temperature=0)
    line = serve.wait_for_line(REQUEST_LINE, timeout=30, start=start)
    assert f"prompt={len(tiny_lm.tokenizer.encode(prompt))} tokens" in line
