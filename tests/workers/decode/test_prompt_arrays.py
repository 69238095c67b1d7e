"""OpenAI `prompt` arrays: several prompts in one /v1/completions request, answered as indexed choices."""

from __future__ import annotations

from typing import Any

import pytest
from hybrid_workers.metrics import sample_value

PROMPTS = ["The cache holds", "Layer by layer the", "Decode reads the weights", "A prompt of some length"]


@pytest.fixture(scope="module")
def server(module_decode_server: Any) -> Any:
    return module_decode_server(max_concurrency=4, max_queue=4)


def _body(server: Any, prompt: Any, **extra: Any) -> dict[str, Any]:
    return {"model": server.name, "prompt": prompt, "max_tokens": 8, "temperature": 0, **extra}


def test_several_text_prompts_get_one_choice_each_equal_to_asking_alone(server: Any) -> None:
    with server.client() as client:
        alone = [client.post("/v1/completions", json=_body(server, p)).json() for p in PROMPTS]
        together = client.post("/v1/completions", json=_body(server, PROMPTS, logprobs=0))
    assert together.status_code == 200
    body = together.json()
    assert [c["index"] for c in body["choices"]] == [0, 1, 2, 3]
    assert [c["text"] for c in body["choices"]] == [a["choices"][0]["text"] for a in alone]
    assert all(c["logprobs"] is not None for c in body["choices"])
    assert body["usage"]["prompt_tokens"] == sum(a["usage"]["prompt_tokens"] for a in alone)
    assert body["usage"]["total_tokens"] == sum(a["usage"]["total_tokens"] for a in alone)


def test_token_id_prompts_and_echo_scoring_work_as_a_batch(server: Any) -> None:
    ids = [[1, 50, 60, 70], [1, 80, 90]]
    with server.client() as client:
        reply = client.post("/v1/completions", json=_body(server, ids, max_tokens=0, echo=True, logprobs=1))
    assert reply.status_code == 200
    choices = reply.json()["choices"]
    assert [len(c["logprobs"]["tokens"]) for c in choices] == [4, 3]


def test_one_bad_prompt_refuses_the_whole_request_before_any_work(server: Any) -> None:
    labels = {"model": server.name, "prefill": "local"}
    before = sample_value("hybrid_inference_generation_tokens_total", labels) or 0
    with server.client() as client:
        reply = client.post("/v1/completions", json=_body(server, [[1, 50], [1, 99999]]))  # out of vocabulary
        streamed = client.post("/v1/completions", json=_body(server, PROMPTS, stream=True))
    assert reply.status_code == 400 and "prompt" in reply.json()["error"]["message"]
    assert streamed.status_code == 400 and "stream=false" in streamed.json()["error"]["message"]
    assert (sample_value("hybrid_inference_generation_tokens_total", labels) or 0) == before


def test_more_prompts_than_slots_and_queue_get_429_and_leave_nothing_running(server: Any) -> None:
    with server.client() as client:
        reply = client.post("/v1/completions", json=_body(server, [f"prompt {i}" for i in range(9)]))
    assert reply.status_code == 429 and "retry-after" in reply.headers
    from decode_servers import wait_for

    wait_for(lambda: sample_value("hybrid_inference_requests_running", {"model": server.name}) == 0, "slots")
