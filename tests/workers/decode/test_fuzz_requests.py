"""Property: whatever JSON a client sends, the API answers 2xx or 4xx with OpenAI's error shape, never 5xx."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

MODEL = "fuzz-model"
PARAMS = [
    "model", "prompt", "messages", "max_tokens", "max_completion_tokens", "temperature", "top_p", "top_k",
    "seed", "stop", "n", "stream", "stream_options", "logprobs", "top_logprobs", "echo", "best_of",
    "presence_penalty", "frequency_penalty", "logit_bias", "user", "suffix", "response_format", "tools",
]  # fmt: skip

scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**40), max_value=2**40),
    st.floats(allow_nan=False, allow_infinity=False, width=32),
    st.text(max_size=12),
)
values = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)
message = st.fixed_dictionaries(
    {
        "role": st.sampled_from(["user", "system", "assistant", "robot"]),
        "content": st.one_of(st.text(max_size=20), values),
    }
)
special = {
    "model": st.one_of(st.just(MODEL), values),
    "prompt": st.one_of(st.text(max_size=30), st.lists(st.integers(-5, 2000), max_size=8), values),
    "messages": st.one_of(st.lists(message, max_size=3), values),
    "max_tokens": st.one_of(st.integers(-2, 8), values),
    "stream": st.booleans(),
}
bodies = st.dictionaries(st.sampled_from([*PARAMS, "bogus"]), values, max_size=8).flatmap(
    lambda base: st.fixed_dictionaries({k: special.get(k, st.just(v)) for k, v in base.items()})
)


@pytest.fixture(scope="module")
def client(module_decode_server):
    """A server whose small context keeps any accepted request short."""
    with module_decode_server(served_model_name=MODEL, max_model_len=48).client() as http:
        yield http


BASES = {
    "/v1/completions": {"model": MODEL, "prompt": "fuzz", "max_tokens": 2},
    "/v1/chat/completions": {
        "model": MODEL,
        "messages": [{"role": "user", "content": "fuzz"}],
        "max_tokens": 2,
    },
}


def check(client: Any, path: str, body: dict[str, Any]) -> None:
    reply = client.post(path, json=body)
    assert reply.status_code < 500, (body, reply.text)
    if reply.status_code >= 400:
        error = reply.json()["error"]
        assert error["message"] and error["type"]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(body=bodies, path=st.sampled_from(sorted(BASES)))
def test_no_request_body_yields_a_server_error(client: Any, body: dict[str, Any], path: str) -> None:
    check(client, path, body)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    changes=st.dictionaries(st.sampled_from(PARAMS[3:]), values, min_size=1, max_size=2),
    path=st.sampled_from(sorted(BASES)),
)
def test_a_valid_request_with_odd_parameters_never_yields_a_server_error(
    client: Any, changes: dict[str, Any], path: str
) -> None:
    check(client, path, {**BASES[path], **changes})
