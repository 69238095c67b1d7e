"""Every kind of bad request gets the right 4xx and OpenAI's error JSON, never a 500."""

from __future__ import annotations

from typing import Any

import pytest

MODEL = "bad-requests-model"
LONG = "word " * 600  # well over the tiny model's 512-token context
OK_CHAT = [{"role": "user", "content": "hi"}]

# (case id, path, body (dict, or raw bytes), status, param named in the error, text in the message)
CASES: list[tuple[str, str, Any, int, str | None, str]] = [
    ("invalid json", "/v1/completions", b'{"model": ', 400, None, "not valid JSON"),
    ("empty body", "/v1/completions", b"", 400, None, "empty"),
    ("body not an object", "/v1/completions", b"[1, 2]", 400, None, "JSON object"),
    ("missing prompt", "/v1/completions", {"model": MODEL}, 400, "prompt", "required"),
    ("missing model", "/v1/completions", {"prompt": "hi"}, 400, "model", "required"),
    ("unknown model", "/v1/completions", {"model": "gpt-9", "prompt": "hi"}, 404, "model", "gpt-9"),
    ("prompt wrong type", "/v1/completions", {"model": MODEL, "prompt": 5}, 400, "prompt", "5"),
    (
        "empty prompt and no BOS",
        "/v1/completions",
        {"model": MODEL, "prompt": "", "add_special_tokens": False},
        400,
        "prompt",
        "no BOS token is added",
    ),
    ("empty token list", "/v1/completions", {"model": MODEL, "prompt": []}, 400, "prompt", "empty"),
    (
        "two prompts streamed",
        "/v1/completions",
        {"model": MODEL, "prompt": ["a", "b"], "stream": True},
        400,
        "prompt",
        "stream=false",
    ),
    (
        "token id out of vocab",
        "/v1/completions",
        {"model": MODEL, "prompt": [1, 99999]},
        400,
        "prompt",
        "99999",
    ),
    (
        "max_tokens as string",
        "/v1/completions",
        {"model": MODEL, "prompt": "hi", "max_tokens": "5"},
        400,
        "max_tokens",
        "'5'",
    ),
    (
        "negative max_tokens",
        "/v1/completions",
        {"model": MODEL, "prompt": "hi", "max_tokens": -1},
        400,
        "max_tokens",
        "-1",
    ),
    (
        "temperature too high",
        "/v1/completions",
        {"model": MODEL, "prompt": "hi", "temperature": 5},
        400,
        "temperature",
        "5",
    ),
    ("top_p zero", "/v1/completions", {"model": MODEL, "prompt": "hi", "top_p": 0}, 400, "top_p", "0"),
    ("n above one", "/v1/completions", {"model": MODEL, "prompt": "hi", "n": 3}, 400, "n", "n 3"),
    (
        "logprobs above five",
        "/v1/completions",
        {"model": MODEL, "prompt": "hi", "logprobs": 9},
        400,
        "logprobs",
        "9",
    ),
    (
        "unknown parameter",
        "/v1/completions",
        {"model": MODEL, "prompt": "hi", "temprature": 1},
        400,
        "temprature",
        "unknown",
    ),
    (
        "prompt over context",
        "/v1/completions",
        {"model": MODEL, "prompt": LONG},
        400,
        "prompt",
        "context length",
    ),
    (
        "max_tokens over context",
        "/v1/completions",
        {"model": MODEL, "prompt": "hi", "max_tokens": 5000},
        400,
        "prompt",
        "context length",
    ),
    (
        "max_tokens 0 without echo",
        "/v1/completions",
        {"model": MODEL, "prompt": "hi", "max_tokens": 0},
        400,
        "max_tokens",
        "echo",
    ),
    (
        "penalty unsupported",
        "/v1/completions",
        {"model": MODEL, "prompt": "hi", "presence_penalty": 1.0},
        400,
        "presence_penalty",
        "not supported",
    ),
    (
        "empty stop string",
        "/v1/completions",
        {"model": MODEL, "prompt": "hi", "stop": [""]},
        400,
        "stop[0]",
        "at least 1",
    ),
    ("negative seed", "/v1/completions", {"model": MODEL, "prompt": "hi", "seed": -3}, 400, "seed", "-3"),
    (
        "stream with top logprobs",
        "/v1/completions",
        {"model": MODEL, "prompt": "hi", "stream": True, "logprobs": 2},
        400,
        "logprobs",
        "stream=false",
    ),
    (
        "stream_options without stream",
        "/v1/completions",
        {"model": MODEL, "prompt": "hi", "stream_options": {"include_usage": True}},
        400,
        "stream_options",
        "",
    ),
    (
        "empty messages",
        "/v1/chat/completions",
        {"model": MODEL, "messages": []},
        400,
        "messages",
        "at least 1",
    ),
    (
        "bad role",
        "/v1/chat/completions",
        {"model": MODEL, "messages": [{"role": "robot", "content": "x"}]},
        400,
        "messages[0].role",
        "robot",
    ),
    (
        "message without content",
        "/v1/chat/completions",
        {"model": MODEL, "messages": [{"role": "user"}]},
        400,
        "messages[0].content",
        "required",
    ),
    (
        "chat max_tokens zero",
        "/v1/chat/completions",
        {"model": MODEL, "messages": OK_CHAT, "max_tokens": 0},
        400,
        "max_tokens",
        "0",
    ),
    (
        "top_logprobs without logprobs",
        "/v1/chat/completions",
        {"model": MODEL, "messages": OK_CHAT, "top_logprobs": 2},
        400,
        "top_logprobs",
        "logprobs=true",
    ),
    (
        "tools unsupported",
        "/v1/chat/completions",
        {"model": MODEL, "messages": OK_CHAT, "tools": [{}]},
        400,
        "tools",
        "not supported",
    ),
    (
        "chat over context",
        "/v1/chat/completions",
        {"model": MODEL, "messages": [{"role": "user", "content": LONG}]},
        400,
        "messages",
        "context length",
    ),
]


@pytest.fixture(scope="module")
def server_client(module_decode_server):
    """One server for the whole table (no generation ever starts)."""
    with module_decode_server(served_model_name=MODEL).client() as client:
        yield client


@pytest.mark.parametrize(
    ("path", "body", "status", "param", "text"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_bad_request_gets_openai_error(server_client, path, body, status, param, text) -> None:
    if isinstance(body, bytes):
        reply = server_client.post(path, content=body, headers={"content-type": "application/json"})
    else:
        reply = server_client.post(path, json=body)
    assert reply.status_code == status, reply.text
    error = reply.json()["error"]
    assert set(error) == {"message", "type", "param", "code"}
    assert error["param"] == param
    assert text in error["message"]
    assert error["type"] in ("invalid_request_error", "not_found_error")


def test_an_oversized_body_is_refused_before_parsing(server_client) -> None:
    from hybrid_workers.decode.app import MAX_BODY_BYTES

    reply = server_client.post("/v1/completions", content=b" " * (MAX_BODY_BYTES + 1))
    assert reply.status_code == 413 and reply.json()["error"]["code"] == "body_too_large"


def test_unknown_route_and_method_are_openai_errors(server_client) -> None:
    missing = server_client.get("/v1/engines")
    wrong_method = server_client.get("/v1/completions")
    assert missing.status_code == 404 and "/v1/engines" in missing.json()["error"]["message"]
    assert wrong_method.status_code == 405 and "error" in wrong_method.json()


def test_bad_requests_are_counted_as_invalid(server_client) -> None:
    from hybrid_workers.metrics import sample_value

    labels = {"model": MODEL, "outcome": "invalid"}
    before = sample_value("hybrid_inference_requests_total", labels)
    server_client.post("/v1/completions", json={"model": MODEL, "prompt": "hi", "n": 2})
    assert sample_value("hybrid_inference_requests_total", labels) == before + 1
