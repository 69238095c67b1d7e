"""`hybrid-inference serve` without --model serves the trained default model and answers like one.

Two worker processes (each with torch's one thread, like this test process) and the official `openai`
client; every prompt prefills on the prefill worker, so the answer also proves the split path.
"""

from __future__ import annotations

from collections.abc import Iterator

import openai
import pytest
from hybrid_workers.engine import SamplingParams, stream_completion
from support.serve import RunningServe, running_serve

pytestmark = pytest.mark.slow

QUESTION = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture(scope="module")
def serve(trained_model_dir) -> Iterator[RunningServe]:
    """serve with no --model and no demo preset: the default model (already converted this session)."""
    env = {"HYBRID_INFERENCE_DEMO_PRESET": ""}
    with running_serve(None, "--remote-prefill-min-tokens", "1", "--fallback", "fail", env=env) as running:
        yield running


def test_serve_without_a_model_serves_smollm2_and_answers_paris(serve, trained_lm) -> None:
    client = openai.OpenAI(base_url=serve.base_url + "/v1", api_key="unused", max_retries=0, timeout=120)
    assert [m.id for m in client.models.list().data] == ["SmolLM2-135M-Instruct"]
    reply = client.chat.completions.create(
        model="SmolLM2-135M-Instruct", messages=QUESTION, max_tokens=24, temperature=0
    )
    answer = reply.choices[0].message.content
    assert answer is not None and "Paris" in answer
    ids = trained_lm.tokenizer.apply_chat_template(QUESTION, add_generation_prompt=True)["input_ids"]
    params = SamplingParams(max_tokens=24, temperature=0)
    assert answer == "".join(step.text for step in stream_completion(trained_lm, ids, params))
    assert "prefill=remote" in serve.wait_for_line(r"^decode\s+\| .*request \S+: success")
