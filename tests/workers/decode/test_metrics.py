"""The decode worker's Prometheus metrics and its one log line per request."""

from __future__ import annotations

import itertools
import logging

from hybrid_workers.metrics import FallbackReason, RequestOutcome, sample_value
from prometheus_client.parser import text_string_to_metric_families

PROMPT = "Metrics tell whether the plan matches reality"


def metric(name: str, **labels: str) -> float:
    return sample_value("hybrid_inference_" + name, labels)


def test_each_finished_request_feeds_the_latency_and_token_metrics(decode_server, tiny_lm, caplog) -> None:
    server = decode_server()
    labels = {"model": server.name, "prefill": "local"}
    body = {"model": server.name, "prompt": PROMPT, "max_tokens": 6, "temperature": 0, "stop": None}
    with caplog.at_level(logging.INFO, logger="hybrid_inference.decode"), server.client() as client:
        replies = [
            client.post("/v1/completions", json={**body, "stream": stream}) for stream in (False, True, True)
        ]
    assert [reply.status_code for reply in replies] == [200, 200, 200]
    per_request = replies[0].json()["usage"]["completion_tokens"]  # greedy: the same for all three
    tokens = 3 * per_request
    assert metric("time_to_first_token_seconds_count", **labels) == 3
    assert metric("e2e_request_latency_seconds_count", **labels) == 3
    assert metric("decode_tokens_per_second_count", **labels) == 3
    assert metric("decode_tokens_per_second_sum", **labels) > 0
    assert metric("inter_token_latency_seconds_count", **labels) == tokens - 3
    assert metric("generation_tokens_total", **labels) == tokens
    assert metric("prompt_tokens_total", **labels) == 3 * len(tiny_lm.tokenizer.encode(PROMPT))
    assert metric("requests_total", model=server.name, outcome="success") == 3
    lines = [r.getMessage() for r in caplog.records if r.getMessage().startswith("request ")]
    assert len(lines) == 3
    assert all(
        "prefill=local" in line and f"output={per_request} tokens" in line and "tps=" in line
        for line in lines
    )
    ids = [reply.headers["x-request-id"] for reply in replies]
    assert [line.split(":")[0] for line in lines] == [f"request {request_id}" for request_id in ids]


def test_metrics_endpoint_is_prometheus_text_with_the_planner_predictions(decode_server) -> None:
    server = decode_server(predicted_ttft_s=0.4, predicted_decode_tps=37.5)
    with server.client() as client:
        client.post("/v1/completions", json={"model": server.name, "prompt": PROMPT, "max_tokens": 2})
        reply = client.get("/metrics")
    assert reply.headers["content-type"].startswith("text/plain")
    families = {family.name: family for family in text_string_to_metric_families(reply.text)}
    ours = {name for name in families if name.startswith("hybrid_inference_")}
    for name in ("time_to_first_token_seconds", "decode_tokens_per_second", "requests_running", "requests"):
        assert "hybrid_inference_" + name in ours
    predicted = {
        s.labels["model"]: s.value for s in families["hybrid_inference_predicted_ttft_seconds"].samples
    }
    assert predicted[server.name] == 0.4
    assert metric("predicted_decode_tokens_per_second", model=server.name) == 37.5


def test_every_outcome_and_fallback_series_exists_before_its_first_event(decode_server) -> None:
    # rate() only sees an increment from a series that already existed: a fresh worker exports 0s.
    server = decode_server(served_model_name="fresh-zeroes")
    with server.client() as client:
        families = {f.name: f for f in text_string_to_metric_families(client.get("/metrics").text)}
    mine = [s for s in families["hybrid_inference_requests"].samples if s.labels["model"] == "fresh-zeroes"]
    assert {s.labels["outcome"] for s in mine if s.name.endswith("_total")} == {
        o.value for o in RequestOutcome
    }
    fallbacks = families["hybrid_inference_prefill_fallback"].samples
    reasons = {s.labels["reason"] for s in fallbacks if s.labels["model"] == "fresh-zeroes"}
    assert reasons == {r.value for r in FallbackReason}
    assert all(s.value == 0 for s in mine if s.name.endswith("_total"))


def test_health_ready_and_models(decode_server) -> None:
    server = decode_server(max_model_len=300)
    with server.client() as client:
        health, ready, models = client.get("/health"), client.get("/ready"), client.get("/v1/models")
    assert health.json() == {"status": "ok"}
    assert ready.status_code == 200 and ready.json()["ready"] is True
    card = models.json()["data"][0]
    assert (card["id"], card["max_model_len"]) == (server.name, 300)
    with server.client() as client:
        assert client.get(f"/v1/models/{server.name}").json()["id"] == server.name
        assert client.get("/v1/models/other").json()["error"]["code"] == "model_not_found"


def test_finished_requests_feed_queue_time_length_and_finish_reason_metrics(decode_server, tiny_lm) -> None:
    server = decode_server()
    body = {"model": server.name, "prompt": PROMPT, "max_tokens": 4, "temperature": 0, "ignore_eos": True}
    with server.client() as client:
        assert client.post("/v1/completions", json=body).status_code == 200
        text = client.get("/metrics").text
    prompt_tokens = len(tiny_lm.tokenizer.encode(PROMPT))
    assert metric("request_success_total", model=server.name, finished_reason="length") == 1
    assert metric("request_success_total", model=server.name, finished_reason="stop") == 0
    assert metric("request_queue_time_seconds_count", model=server.name) == 1
    assert metric("request_prompt_tokens_sum", model=server.name) == prompt_tokens
    assert metric("request_generation_tokens_sum", model=server.name) == 4
    families = {f.name: f for f in text_string_to_metric_families(text)}
    build = [s for s in families["hybrid_inference_build_info"].samples if s.labels["model"] == server.name]
    assert build[0].labels["role"] == "decode" and build[0].labels["version"]


def test_ttft_buckets_are_dense_where_headline_numbers_live() -> None:
    from hybrid_workers.metrics import TTFT_BUCKETS

    assert {0.05, 0.1, 0.2, 0.5, 1, 1.5, 2, 3, 4, 6, 8, 10} <= set(TTFT_BUCKETS)
    gaps = [b / a for a, b in itertools.pairwise(TTFT_BUCKETS) if 0.05 <= a < 10]
    assert max(gaps) <= 2
