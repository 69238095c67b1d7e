"""Property: whatever a client sends, the API answers 2xx or 4xx with OpenAI's error shape, never 5xx.

In-process against the ASGI app (no sockets) with the tiny model and a 16-token context, so accepted
requests stay short; derandomized, so every run sends the same 2,100 bodies across both endpoints.
The strategies cover tiny and huge numbers, huge token ids, long stop lists, deep nesting, invalid
UTF-8 and lone surrogates, wrong types and vLLM's extensions.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import pytest
from hybrid_workers.decode.app import create_app
from hybrid_workers.decode.config import DecodeConfig
from hybrid_workers.decode.worker import DecodeWorker
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from starlette.testclient import TestClient

pytestmark = pytest.mark.slow  # ~40 s for 2,100 bodies on the 2-core reference machine

MODEL = "fuzz-model"
PATHS = ["/v1/completions", "/v1/chat/completions"]
PARAMS = [
    "model", "prompt", "messages", "max_tokens", "max_completion_tokens", "temperature", "top_p", "top_k",
    "seed", "stop", "n", "stream", "stream_options", "logprobs", "top_logprobs", "echo", "best_of",
    "presence_penalty", "frequency_penalty", "logit_bias", "user", "suffix", "response_format", "tools",
    "ignore_eos", "min_tokens", "stop_token_ids", "add_special_tokens", "skip_special_tokens",
    "add_generation_prompt", "continue_final_message", "repetition_penalty", "min_p",
]  # fmt: skip
SAMPLING = ["temperature", "top_p", "top_k", "seed", "max_tokens", "min_tokens", "logprobs", "n"]

EDGE_NUMBERS = [
    0, -0.0, 5e-324, 1e-300, 1e-40, 1e-6, 1e-5, 0.5, 1, 1.0, 2, 2.0000001, 1e308, -1e308,
    2**31 - 1, 2**31, 2**32, 2**53 + 1, 2**63 - 1, 2**63, 2**64, 2**100, -(2**63), -1,
]  # fmt: skip
numbers = st.one_of(
    st.sampled_from(EDGE_NUMBERS),
    st.integers(),
    st.floats(allow_nan=False, allow_infinity=False),
)
texts = st.one_of(
    st.text(max_size=12),
    st.sampled_from(["", " ", "<s>", "</s>", "\ud800", "\x00", "é’😀", "x" * 3000]),
)
scalars = st.one_of(st.none(), st.booleans(), numbers, texts)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=5), st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
token_ids = st.lists(st.one_of(st.integers(-5, 1100), st.sampled_from([2**31, 2**63, 2**64])), max_size=10)
stop_lists = st.one_of(
    st.lists(st.text(min_size=1, max_size=4), max_size=40), st.text(max_size=600), st.just(["x"] * 17)
)
message = st.fixed_dictionaries(
    {
        "role": st.sampled_from(["user", "system", "assistant", "developer", "robot"]),
        "content": st.one_of(
            texts, st.lists(st.fixed_dictionaries({"type": st.just("text"), "text": texts}))
        ),
    }
)
special = {
    "model": st.one_of(st.just(MODEL), values),
    "prompt": st.one_of(
        texts, token_ids, st.lists(token_ids, max_size=3), st.lists(texts, max_size=3), values
    ),
    "messages": st.one_of(st.lists(message, max_size=3), values),
    "max_tokens": st.one_of(st.integers(-2, 8), numbers, values),
    "stop": st.one_of(stop_lists, values),
    "stop_token_ids": st.one_of(token_ids, values),
    "stream": st.booleans(),
    "stream_options": st.one_of(
        st.fixed_dictionaries({"include_usage": st.booleans(), "continuous_usage_stats": st.booleans()}),
        values,
    ),
}
any_body = st.dictionaries(st.sampled_from([*PARAMS, "bogus"]), values, max_size=8).flatmap(
    lambda base: st.fixed_dictionaries({k: special.get(k, st.just(v)) for k, v in base.items()})
)
BASES = {
    "/v1/completions": {"model": MODEL, "prompt": "fuzz", "max_tokens": 2},
    "/v1/chat/completions": {
        "model": MODEL,
        "messages": [{"role": "user", "content": "fuzz"}],
        "max_tokens": 2,
    },
}
odd_changes = st.dictionaries(
    st.sampled_from(PARAMS[3:]), st.one_of(values, *special.values()), min_size=1, max_size=3
)
edge_sampling = st.dictionaries(
    st.sampled_from(SAMPLING), st.sampled_from(EDGE_NUMBERS), min_size=1, max_size=4
)


def _raw_body(kind: str, body: dict[str, Any], depth: int, junk: bytes) -> bytes:
    encoded = json.dumps(body).encode()
    if kind == "bad utf-8":
        return encoded[: len(encoded) // 2] + junk + encoded[len(encoded) // 2 :]
    if kind == "deep nesting":
        return b'{"model": "' + MODEL.encode() + b'", "prompt": ' + b"[" * depth + b"1" + b"]" * depth + b"}"
    if kind == "truncated":
        return encoded[: max(1, len(encoded) - depth % len(encoded))]
    if kind == "non-json numbers":
        return encoded.replace(b'"max_tokens": 2', b'"max_tokens": NaN').replace(
            b"}", b', "top_p": Infinity}', 1
        )
    return junk  # raw junk


raw_bodies = st.builds(
    _raw_body,
    st.sampled_from(["bad utf-8", "deep nesting", "truncated", "non-json numbers", "junk"]),
    st.sampled_from(list(BASES.values())),
    st.integers(1, 20000),
    st.binary(min_size=1, max_size=16).map(lambda b: b"\xff\xfe" + b),
)


@pytest.fixture(scope="module")
def client(tiny_lm: Any) -> Iterator[TestClient]:
    """The ASGI app in-process; a 16-token context keeps any accepted request short."""
    worker = DecodeWorker(tiny_lm, DecodeConfig(served_model_name=MODEL, max_model_len=16, max_queue=256))
    with TestClient(create_app(worker), raise_server_exceptions=False) as http:
        yield http
    worker.close()


def check(client: TestClient, path: str, body: dict[str, Any] | bytes) -> None:
    if isinstance(body, bytes):
        reply = client.post(path, content=body, headers={"content-type": "application/json"})
    else:
        reply = client.post(
            path, content=json.dumps(body).encode(), headers={"content-type": "application/json"}
        )
    assert reply.status_code < 500, (body, reply.text)
    if reply.status_code >= 400:
        error = reply.json()["error"]
        assert error["message"] and error["type"]


def fuzz(examples: int) -> Any:
    return settings(
        max_examples=examples,
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )


@fuzz(700)
@given(body=any_body, path=st.sampled_from(PATHS))
def test_no_request_body_yields_a_server_error(client: TestClient, body: dict[str, Any], path: str) -> None:
    check(client, path, body)


@fuzz(600)
@given(changes=odd_changes, path=st.sampled_from(PATHS))
def test_a_valid_request_with_odd_parameters_never_yields_a_server_error(client, changes, path) -> None:
    check(client, path, {**BASES[path], **changes})


@fuzz(400)
@given(changes=edge_sampling, path=st.sampled_from(PATHS))
def test_tiny_and_huge_sampling_numbers_never_yield_a_server_error(client, changes, path) -> None:
    check(client, path, {**BASES[path], **changes})


@fuzz(400)
@given(body=raw_bodies, path=st.sampled_from(PATHS))
def test_bytes_that_are_not_json_never_yield_a_server_error(
    client: TestClient, body: bytes, path: str
) -> None:
    check(client, path, body)
