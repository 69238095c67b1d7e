"""`serve` under fault injection (real processes): a killed prefill worker is restarted while every
stream completes; a stopped one is skipped by the breaker and used again once it continues.

One `serve` for the module (tiny demo model). Orderings are proven with serve's output lines and the
decode worker's counters; the timeouts are hang guards only.
"""

from __future__ import annotations

import json
import os
import signal
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families
from support.serve import RunningServe, running_serve

pytestmark = pytest.mark.slow

STALL_S = "3"  # --prefill-stall-timeout
PROMPTS = [
    f"Stream {i} asks the prefill worker for the cache of this rather long prompt, twice over. " * 2
    for i in range(4)
]


@pytest.fixture(scope="module")
def serve(tiny_model_dir: Path) -> Iterator[RunningServe]:
    args = ["--remote-prefill-min-tokens", "8", "--prefill-stall-timeout", STALL_S]
    # Probes of a healthy worker are rare here, so only requests reveal a stopped one (deterministic).
    args.append("--decode-arg=--prefill-probe-interval=60")
    with running_serve(tiny_model_dir, *args, "--restart-window", "600") as running:
        yield running


def counter(serve: RunningServe, name: str, **labels: str) -> float:
    """A decode-worker sample from /metrics (0 when absent)."""
    text = httpx.get(serve.decode_metrics_url, timeout=10).text
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == "hybrid_inference_" + name and all(
                sample.labels.get(k) == v for k, v in labels.items()
            ):
                return float(sample.value)
    return 0.0


def remote(serve: RunningServe, outcome: str) -> float:
    return counter(serve, "remote_prefill_total", outcome=outcome)


def attempts(serve: RunningServe) -> float:
    return sum(remote(serve, outcome) for outcome in ("success", "failed", "cancelled"))


def ready(serve: RunningServe) -> dict:
    return httpx.get(serve.base_url + "/ready", timeout=10).json()


def wait_ready(serve: RunningServe, timeout_s: float = 180.0) -> None:  # a hang guard, not a goal
    import time

    deadline = time.monotonic() + timeout_s
    while ready(serve)["prefill"] != "ready":
        assert time.monotonic() < deadline, f"prefill never ready again: {ready(serve)}\n{serve.output()}"
        time.sleep(0.1)


def complete(serve: RunningServe, prompt: str, max_tokens: int = 24) -> str:
    body = {"model": model(serve), "prompt": prompt, "max_tokens": max_tokens, "temperature": 0}
    reply = httpx.post(serve.base_url + "/v1/completions", json=body, timeout=120)
    assert reply.status_code == 200, reply.text
    return str(reply.json()["choices"][0]["text"])


def model(serve: RunningServe) -> str:
    return str(httpx.get(serve.base_url + "/v1/models", timeout=10).json()["data"][0]["id"])


class HealthProbe(threading.Thread):
    """GET /health in a loop until stopped; records every status (or the error)."""

    def __init__(self, serve: RunningServe) -> None:
        super().__init__(daemon=True)
        self.serve, self.results, self.stop = serve, [], threading.Event()

    def run(self) -> None:
        with httpx.Client(timeout=10) as client:
            while not self.stop.wait(0.05):
                try:
                    self.results.append(client.get(self.serve.base_url + "/health").status_code)
                except httpx.HTTPError as exc:
                    self.results.append(repr(exc))


def stream(serve: RunningServe, prompt: str, max_tokens: int, first: threading.Event, out: list) -> None:
    body = {
        "model": model(serve),
        "prompt": prompt,
        "max_tokens": max_tokens,
        "temperature": 0,
        "stream": True,
    }
    text, events = "", []
    with httpx.stream("POST", serve.base_url + "/v1/completions", json=body, timeout=120) as response:
        for line in response.iter_lines():
            if line.startswith("data: "):
                events.append(line[6:])
                if line != "data: [DONE]":
                    text += json.loads(line[6:])["choices"][0]["text"]
                    first.set()
    out.append((prompt, text, events[-1] if events else None))


def test_sigkill_of_the_prefill_worker_with_four_streams_in_flight(serve: RunningServe) -> None:
    wait_ready(serve)
    max_tokens = 64
    reference = {prompt: complete(serve, prompt, max_tokens) for prompt in PROMPTS}
    health = HealthProbe(serve)
    health.start()
    firsts = [threading.Event() for _ in PROMPTS]
    results: list = []
    threads = [
        threading.Thread(target=stream, args=(serve, p, max_tokens, f, results), daemon=True)
        for p, f in zip(PROMPTS, firsts, strict=True)
    ]
    for thread in threads:
        thread.start()
    assert all(f.wait(120) for f in firsts), serve.output()
    old = serve.pids["prefill"]
    start = len(serve.lines)
    os.kill(old, signal.SIGKILL)
    for thread in threads:
        thread.join(120)
    assert sorted(results) == sorted((p, reference[p], "[DONE]") for p in PROMPTS)
    serve.wait_for_line(
        r"the prefill worker ended by SIGKILL; restarting it in .*long prompts prefill", 60, start
    )
    serve.wait_for_line(r"prefill worker pid \d+: restarted", 60, start)
    assert serve.pids["prefill"] != old
    complete(serve, PROMPTS[0])  # may fall back (the old channel learns of the death) or go remote
    serve.wait_for_line(r"prefill worker is back", 120, start)
    before = remote(serve, "success")
    assert complete(serve, PROMPTS[1], max_tokens) == reference[PROMPTS[1]]
    assert remote(serve, "success") == before + 1  # the restarted worker serves remote prefill
    health.stop.set()
    health.join(10)
    assert health.results and set(health.results) == {200}, health.results
    assert serve.process.poll() is None


def test_sigstop_falls_back_after_the_stall_limit_skips_remote_while_open_and_resumes_after_sigcont(
    serve: RunningServe,
) -> None:
    wait_ready(serve)
    want = complete(serve, PROMPTS[2])
    tried, stalled = attempts(serve), counter(serve, "prefill_fallback_total", reason="stalled")
    skipped = counter(serve, "prefill_fallback_total", reason="peer_down")
    pid = serve.pids["prefill"]
    os.kill(pid, signal.SIGSTOP)
    try:
        assert complete(serve, PROMPTS[2]) == want  # entered remote, stalled, fell back
        assert counter(serve, "prefill_fallback_total", reason="stalled") == stalled + 1
        assert attempts(serve) == tried + 1
        state = ready(serve)
        assert (state["prefill"], state["remote"]) == ("stalled", False), state
        for _ in range(2):  # the breaker is open: no remote attempt at all
            assert complete(serve, PROMPTS[2]) == want
        assert attempts(serve) == tried + 1
        assert counter(serve, "prefill_fallback_total", reason="peer_down") == skipped + 2
    finally:
        os.kill(pid, signal.SIGCONT)
    wait_ready(serve)  # the probe found it answering again
    before = remote(serve, "success")
    assert complete(serve, PROMPTS[2]) == want
    assert remote(serve, "success") == before + 1
