"""A real Prometheus scrapes both workers of a running `serve`; its HTTP API sees every request.

Prometheus is Debian's package (make system-deps); the test skips with that hint when it is missing.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import openai
import pytest
from support.prometheus import Prometheus, ScrapeTarget, require_prometheus, running_prometheus
from support.serve import RunningServe, running_serve

pytestmark = pytest.mark.slow

REQUESTS = 3
PROMPTS = [f"Request number {i} asks the prefill worker for its KV cache" for i in range(REQUESTS)]


@pytest.fixture(scope="module")
def serve(tiny_model_dir: Path) -> Iterator[RunningServe]:
    require_prometheus()  # skip before paying for the workers' start-up
    with running_serve(tiny_model_dir, "--remote-prefill-min-tokens", "1", "--fallback", "fail") as running:
        yield running


@pytest.fixture(scope="module")
def prometheus(serve: RunningServe, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Prometheus]:
    targets = [
        ScrapeTarget("decode", f"127.0.0.1:{serve.api_port}"),
        ScrapeTarget("prefill", f"127.0.0.1:{serve.prefill_metrics_port}"),
    ]
    with running_prometheus(targets, tmp_path_factory.mktemp("prometheus")) as prom:
        prom.wait_for_targets_up()
        yield prom


@pytest.fixture(scope="module")
def sent(serve: RunningServe, prometheus: Prometheus) -> list[Any]:
    """The completions of REQUESTS requests, sent once Prometheus scrapes both workers."""
    client = openai.OpenAI(base_url=serve.base_url + "/v1", api_key="not-needed", max_retries=0, timeout=60)
    model = client.models.list().data[0].id
    return [client.completions.create(model=model, prompt=p, max_tokens=8, temperature=0) for p in PROMPTS]


def settled(prometheus: Prometheus, expr: str, expected: float) -> float:
    """Wait until `expr` reaches `expected`, then return it (a later, higher value fails the caller)."""
    prometheus.wait_for(expr, lambda value: value >= expected)
    value = prometheus.value(expr)
    assert value is not None
    return value


def test_ttft_histogram_counts_every_request(prometheus: Prometheus, sent: list[Any]) -> None:
    expr = 'sum(hybrid_inference_time_to_first_token_seconds_count{job="decode", prefill="remote"})'
    assert settled(prometheus, expr, REQUESTS) == REQUESTS


def test_decode_tokens_per_second_is_observed_and_nonzero(prometheus: Prometheus, sent: list[Any]) -> None:
    count = 'sum(hybrid_inference_decode_tokens_per_second_count{job="decode"})'
    assert settled(prometheus, count, REQUESTS) == REQUESTS
    mean = prometheus.value(
        'sum(hybrid_inference_decode_tokens_per_second_sum{job="decode"}) '
        '/ sum(hybrid_inference_decode_tokens_per_second_count{job="decode"})'
    )
    assert mean is not None and mean > 0


def test_token_counters_match_the_usage_the_api_returned(prometheus: Prometheus, sent: list[Any]) -> None:
    prompt_tokens = sum(r.usage.prompt_tokens for r in sent)
    output_tokens = sum(r.usage.completion_tokens for r in sent)
    decode_prompt = 'sum(hybrid_inference_prompt_tokens_total{job="decode", prefill="remote"})'
    assert settled(prometheus, decode_prompt, prompt_tokens) == prompt_tokens
    generated = 'sum(hybrid_inference_generation_tokens_total{job="decode"})'
    assert settled(prometheus, generated, output_tokens) == output_tokens


def test_prefill_worker_metrics_count_the_remote_prefills(prometheus: Prometheus, sent: list[Any]) -> None:
    prompt_tokens = sum(r.usage.prompt_tokens for r in sent)
    assert (
        settled(prometheus, 'sum(hybrid_inference_prefill_seconds_count{job="prefill"})', REQUESTS)
        == REQUESTS
    )
    tokens = 'sum(hybrid_inference_prefill_tokens_total{job="prefill"})'
    assert settled(prometheus, tokens, prompt_tokens) == prompt_tokens
    assert (prometheus.value('sum(hybrid_inference_kv_send_bytes_total{job="prefill"})') or 0) > 0
