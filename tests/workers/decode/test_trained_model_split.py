"""Split serving on the trained default model (SmolLM2-135M-Instruct): the same answers as one process.

A real prefill worker (gRPC on loopback) per dtype and decode workers over real HTTP, all sharing the
session's loaded models (requests run one at a time, so their forward passes never overlap; both sides
use torch's one thread). Remote prefill is forced with remote_prefill_min_tokens=1.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
import torch
from decode_servers import start_server, stop_server
from hybrid_workers.decode.prefill_client import PrefillClient
from hybrid_workers.engine import SamplingParams
from hybrid_workers.engine.decode import forward_one
from hybrid_workers.metrics import sample_value
from hybrid_workers.prefill.config import PrefillServerConfig
from hybrid_workers.prefill.server import start_server as start_prefill

QUESTION = "What is the capital of France?"
COMPLETION_PROMPT = "The three primary colors are"
NEW_TOKENS = 16
MODES = ("layerwise", "bulk")


class Servers:
    """Decode workers of one dtype: `local` prefills itself, `remote[mode]` asks the prefill worker."""

    def __init__(self, lm: Any) -> None:
        self.lm = lm
        self.prefill = start_prefill(lm, PrefillServerConfig(host="127.0.0.1", port=0))
        self.target = f"127.0.0.1:{self.prefill.port}"
        self._started = [start_server(lm)]
        self.local = self._started[0][0]
        self.remote = {mode: self.start_remote(mode=mode) for mode in MODES}
        self._local_answers: dict[str, dict[str, Any]] = {}

    def local_answer(self, kind: str) -> dict[str, Any]:
        """The single-process answer of `kind` (chat or completion), asked once per module."""
        if kind not in self._local_answers:
            self._local_answers[kind] = (chat if kind == "chat" else complete)(self.local)
        return self._local_answers[kind]

    def start_remote(self, **client: Any) -> Any:
        peer = PrefillClient(self.target, self.lm, timeout_s=60.0, **client)
        self._started.append(start_server(self.lm, peer, prefill=self.target, remote_prefill_min_tokens=1))
        return self._started[-1][0]

    def close(self) -> None:
        for running, thread in self._started:
            stop_server(running, thread)
        self.prefill.stop(0)


@pytest.fixture(scope="module", params=["float32", "bfloat16"])
def servers(request: pytest.FixtureRequest) -> Iterator[Servers]:
    lm = request.getfixturevalue("trained_lm" if request.param == "float32" else "trained_lm_bf16")
    running = Servers(lm)
    yield running
    running.close()


def chat(server: Any, content: str = QUESTION, **extra: Any) -> dict[str, Any]:
    body = {"model": server.name, "messages": [{"role": "user", "content": content}]}
    body |= {"max_tokens": NEW_TOKENS, "temperature": 0, "logprobs": True, **extra}
    with server.client() as client:
        reply = client.post("/v1/chat/completions", json=body)
    assert reply.status_code == 200, reply.text
    return reply.json()["choices"][0]


def complete(server: Any, prompt: str = COMPLETION_PROMPT, **extra: Any) -> dict[str, Any]:
    body = {"model": server.name, "prompt": prompt, "max_tokens": NEW_TOKENS, "temperature": 0, "logprobs": 0}
    with server.client() as client:
        reply = client.post("/v1/completions", json=body | extra)
    assert reply.status_code == 200, reply.text
    return reply.json()["choices"][0]


def remote_prompt_tokens(server: Any) -> float:
    return sample_value("hybrid_inference_prompt_tokens_total", {"model": server.name, "prefill": "remote"})


def chat_tokens(choice: dict[str, Any]) -> list[tuple[str, float]]:
    return [(entry["token"], entry["logprob"]) for entry in choice["logprobs"]["content"]]


@pytest.mark.parametrize("mode", MODES)
def test_split_chat_answer_equals_the_single_process_answer(servers: Servers, mode: str) -> None:
    want = servers.local_answer("chat")
    got = chat(servers.remote[mode])
    assert got["message"]["content"] == want["message"]["content"]
    assert "Paris" in got["message"]["content"]
    got_tokens, want_tokens = chat_tokens(got), chat_tokens(want)
    assert [t for t, _ in got_tokens] == [t for t, _ in want_tokens]
    assert [p for _, p in got_tokens] == pytest.approx([p for _, p in want_tokens], abs=1e-5)
    assert remote_prompt_tokens(servers.remote[mode]) > 0  # the prompt really was prefilled remotely


@pytest.mark.parametrize("mode", MODES)
def test_split_completion_equals_the_single_process_completion(servers: Servers, mode: str) -> None:
    want = servers.local_answer("completion")
    got = complete(servers.remote[mode])
    assert got["text"] == want["text"]
    assert got["logprobs"]["tokens"] == want["logprobs"]["tokens"]
    assert got["logprobs"]["token_logprobs"] == pytest.approx(want["logprobs"]["token_logprobs"], abs=1e-5)
    assert len(got["logprobs"]["tokens"]) == NEW_TOKENS  # a real continuation, not an early stop


def transformers_prompt_logprobs(lm: Any, ids: list[int]) -> list[float]:
    """log P(ids[i] | ids[:i]) for i >= 1, from one plain transformers forward pass (float32)."""
    with torch.no_grad():
        logits = lm.model(torch.tensor([ids])).logits[0].float()  # [len, vocab]
    logprobs = torch.log_softmax(logits[:-1], dim=-1)  # [len - 1, vocab]
    return logprobs.gather(1, torch.tensor(ids[1:])[:, None])[:, 0].tolist()


def test_echoed_prompt_logprobs_equal_transformers_in_float32(trained_lm: Any) -> None:
    running = Servers(trained_lm)
    try:
        prompt = "The Eiffel Tower is in Paris, the capital of France. It was built in 1889."
        ids = trained_lm.tokenizer.encode(prompt)
        want = transformers_prompt_logprobs(trained_lm, ids)
        for server in (running.local, running.remote["layerwise"]):
            scored = complete(server, prompt, max_tokens=0, echo=True)["logprobs"]
            assert scored["tokens"] == [trained_lm.tokenizer.decode([t]) for t in ids]
            assert scored["token_logprobs"][0] is None  # the first token has no context
            assert scored["token_logprobs"][1:] == pytest.approx(want, abs=1e-4)
    finally:
        running.close()


def matching_prefix(a: list[int], b: list[int]) -> int:
    return next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))


def greedy_after(lm: Any, remote: Any, prompt_len: int, count: int) -> tuple[list[int], torch.Tensor]:
    """Greedy tokens continuing a remote prefill's cache, and the logits [vocab] of the first step."""
    tokens, first_logits = [remote.first_token], None
    with torch.no_grad():
        for step in range(count - 1):
            logits = forward_one(lm, remote.cache, tokens[-1], prompt_len + step)  # [vocab]
            first_logits = logits if first_logits is None else first_logits
            tokens.append(int(logits.argmax()))
    assert first_logits is not None
    return tokens, first_logits


@pytest.mark.parametrize("encoding", ["fp8", "int8"])
def test_compressed_kv_keeps_the_trained_models_answer(trained_lm: Any, encoding: str) -> None:
    """Token agreement and the first decode step's logit error versus exact KV (docs/benchmarks.md)."""
    prefill = start_prefill(trained_lm, PrefillServerConfig(host="127.0.0.1", port=0))
    target = f"127.0.0.1:{prefill.port}"
    messages = [{"role": "user", "content": QUESTION}]
    ids = [
        int(t)
        for t in trained_lm.tokenizer.apply_chat_template(messages, add_generation_prompt=True)["input_ids"]
    ]
    greedy = SamplingParams(max_tokens=NEW_TOKENS, temperature=0)
    try:
        results = {}
        for wire in ("none", encoding):
            with PrefillClient(target, trained_lm, encoding=wire) as client:
                results[wire] = greedy_after(trained_lm, client.prefill(ids, greedy), len(ids), NEW_TOKENS)
    finally:
        prefill.stop(0)
    (exact_tokens, exact), (lossy_tokens, lossy) = results["none"], results[encoding]
    error = (lossy - exact).abs().max().item()
    agree = matching_prefix(lossy_tokens, exact_tokens)
    end = next((i for i, t in enumerate(lossy_tokens) if t in trained_lm.eos_token_ids), len(lossy_tokens))
    answer = trained_lm.tokenizer.decode(lossy_tokens[:end])
    print(
        f"\n{encoding} on SmolLM2-135M-Instruct: greedy match {agree}/{NEW_TOKENS} tokens, max logit error "
        f"{error:.4f} (logit range {exact.max() - exact.min():.2f}); answer {answer!r}"
    )
    assert "Paris" in answer
    assert 0 < error < 0.05 * (exact.max() - exact.min()).item()
