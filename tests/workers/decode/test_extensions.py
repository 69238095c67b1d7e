"""vLLM's extensions that real clients send: honoured where they can be, refused by name otherwise."""

from __future__ import annotations

import json
from typing import Any

import pytest

MODEL = "extensions-model"
PROMPT = "Real clients send more than OpenAI defines"


@pytest.fixture(scope="module")
def client(module_decode_server: Any) -> Any:
    with module_decode_server(served_model_name=MODEL).client() as http:
        yield http


def events(reply: Any) -> list[Any]:
    lines = [line.removeprefix("data: ") for line in reply.text.splitlines() if line.startswith("data: ")]
    assert lines[-1] == "[DONE]"
    return [json.loads(line) for line in lines[:-1]]


@pytest.mark.parametrize("path", ["/v1/completions", "/v1/chat/completions"])
def test_a_guidellm_request_streams_a_fixed_length_with_usage_on_every_chunk(client: Any, path: str) -> None:
    # What guidellm 0.8 sends for a fixed output length (request_handlers.py of guidellm).
    body: dict[str, Any] = {
        "model": MODEL,
        "stream": True,
        "stream_options": {"include_usage": True, "continuous_usage_stats": True},
        "stop": None,
        "ignore_eos": True,
    }
    if path == "/v1/completions":
        body |= {"prompt": PROMPT, "max_tokens": 12}
    else:
        body |= {"messages": [{"role": "user", "content": [{"type": "text", "text": PROMPT}]}]}
        body |= {"max_completion_tokens": 12}
    chunks = events(client.post(path, json=body))
    token_chunks = [c for c in chunks if c["choices"] and c["choices"][0].get("finish_reason") is not None]
    assert token_chunks[-1]["choices"][0]["finish_reason"] == "length"
    assert chunks[-1]["usage"]["completion_tokens"] == 12 and chunks[-1]["choices"] == []
    counted = [c["usage"]["completion_tokens"] for c in chunks if c["choices"] and "usage" in c]
    assert counted == sorted(counted) and counted[-1] == 12 and len(counted) >= 12


def complete(client: Any, **extra: Any) -> Any:
    body = {"model": MODEL, "prompt": PROMPT, "max_tokens": 3, "temperature": 0, **extra}
    return client.post("/v1/completions", json=body)


def test_add_special_tokens_false_leaves_out_the_bos(client: Any) -> None:
    with_bos = complete(client).json()["usage"]["prompt_tokens"]
    without = complete(client, add_special_tokens=False).json()["usage"]["prompt_tokens"]
    assert without == with_bos - 1


def test_a_prompt_that_starts_with_the_bos_text_gets_no_second_bos(client: Any, tiny_lm: Any) -> None:
    # lm-eval's tokenized_requests=False with add_bos_token=True decodes its ids, BOS included, to text.
    ids = tiny_lm.tokenizer(PROMPT)["input_ids"]
    text = tiny_lm.tokenizer.batch_decode([ids])[0]
    assert text.startswith(tiny_lm.tokenizer.bos_token)
    as_ids = complete(client, prompt=[ids], echo=True, logprobs=1, max_tokens=1).json()
    as_text = complete(client, prompt=text, echo=True, logprobs=1, max_tokens=1).json()
    assert as_text["usage"]["prompt_tokens"] == as_ids["usage"]["prompt_tokens"] == len(ids)
    mine, theirs = as_text["choices"][0]["logprobs"], as_ids["choices"][0]["logprobs"]
    assert mine["token_logprobs"][1:] == pytest.approx(theirs["token_logprobs"][1:], abs=1e-5)


def test_an_empty_prompt_is_accepted_when_the_tokenizer_adds_bos(client: Any) -> None:
    reply = complete(client, prompt="")
    assert reply.status_code == 200 and reply.json()["usage"]["prompt_tokens"] == 1


def test_min_tokens_and_stop_token_ids_are_honoured(client: Any, tiny_lm: Any) -> None:
    greedy = complete(client, max_tokens=8, logprobs=0).json()["choices"][0]["logprobs"]["tokens"]
    third = tiny_lm.tokenizer.convert_tokens_to_ids(tiny_lm.tokenizer.tokenize(greedy[2]))[0]
    stopped = complete(client, max_tokens=8, stop_token_ids=[third]).json()
    assert stopped["choices"][0]["finish_reason"] == "stop"
    assert stopped["usage"]["completion_tokens"] <= 3
    held = complete(client, max_tokens=8, stop_token_ids=[third], min_tokens=6).json()
    assert held["usage"]["completion_tokens"] >= 6


def test_chat_template_switches_change_the_prompt(client: Any) -> None:
    messages = [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "Hello"}]
    base = {"model": MODEL, "messages": messages, "max_tokens": 1}
    default = client.post("/v1/chat/completions", json=base).json()["usage"]["prompt_tokens"]
    no_prompt = {**base, "add_generation_prompt": False}
    plain = client.post("/v1/chat/completions", json=no_prompt).json()["usage"]["prompt_tokens"]
    continued = {**no_prompt, "continue_final_message": True}
    cont = client.post("/v1/chat/completions", json=continued)
    assert plain < default
    assert cont.status_code == 200 and cont.json()["usage"]["prompt_tokens"] <= plain
    both = client.post("/v1/chat/completions", json={**base, "continue_final_message": True})
    assert both.status_code == 400 and both.json()["error"]["param"] == "continue_final_message"


@pytest.mark.parametrize(
    ("param", "refused", "neutral"),
    [
        ("skip_special_tokens", False, True),
        ("include_stop_str_in_output", True, False),
        ("repetition_penalty", 1.2, 1.0),
        ("min_p", 0.1, 0.0),
        ("spaces_between_special_tokens", False, True),
    ],
)
def test_an_extension_that_cannot_be_honoured_is_refused_by_name(client, param, refused, neutral) -> None:
    reply = complete(client, **{param: refused})
    assert reply.status_code == 400
    error = reply.json()["error"]
    assert error["param"] == param and param in error["message"]
    assert complete(client, **{param: neutral}).status_code == 200
