"""`hybrid-inference decode` as a real process next to a real prefill process (killed half-way)."""

from __future__ import annotations

import os
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from decode_servers import wait_for
from hybrid_workers.cli import build_parser
from hybrid_workers.cli.decode import build_config
from hybrid_workers.options import served_name
from support.loopback import free_port
from worker_processes import PROMPT, prefill_ready, spawn, stop


@pytest.fixture
def processes() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for process in started:
        stop(process)


@pytest.mark.slow
def test_decode_process_uses_prefill_process_then_falls_back_when_it_is_killed(
    tiny_model_dir: Path, tmp_path: Path, processes: list[Any]
) -> None:
    prefill_port, api_port = free_port(), free_port()
    env = {
        **os.environ,
        "HYBRID_INFERENCE_REMOTE_PREFILL_MIN_TOKENS": "8",
        "HYBRID_INFERENCE_PORT": str(api_port),
    }
    model = ["--model", str(tiny_model_dir)]
    prefill = spawn(
        "prefill",
        [*model, "--host", "127.0.0.1", "--port", str(prefill_port), "--metrics-port", "0"],
        tmp_path / "prefill.log",
        env,
    )
    processes.append(prefill)
    decode_log = tmp_path / "decode.log"
    processes.append(spawn("decode", [*model, "--prefill", f"127.0.0.1:{prefill_port}"], decode_log, env))
    url = f"http://127.0.0.1:{api_port}"
    wait_for(lambda: prefill_ready(url), "the decode worker to be ready", timeout_s=120)
    name = httpx.get(url + "/v1/models").json()["data"][0]["id"]
    body = {"model": name, "prompt": PROMPT, "max_tokens": 8, "temperature": 0}
    remote = httpx.post(url + "/v1/completions", json=body, timeout=60).json()["choices"][0]["text"]
    prefill.kill()  # SIGKILL: no goodbye
    prefill.wait()
    local = httpx.post(url + "/v1/completions", json=body, timeout=60)
    metrics_text = httpx.get(url + "/metrics").text
    assert local.status_code == 200 and local.json()["choices"][0]["text"] == remote
    assert f'hybrid_inference_prompt_tokens_total{{model="{name}",prefill="remote"}}' in metrics_text
    # A request that tried the dead worker (unreachable), or one the breaker already kept local (peer_down)
    fallbacks = [
        f'hybrid_inference_prefill_fallback_total{{model="{name}",reason="{reason}"}} 1.0' in metrics_text
        for reason in ("unreachable", "peer_down")
    ]
    assert sum(fallbacks) == 1
    log = decode_log.read_text()
    assert "prefill=remote" in log
    assert re.search(r"prefill=local \(fallback: (unreachable|peer_down)\)", log)
    assert "ttft=" in log and "kv_exposed=" in log


def test_flags_and_env_mirrors_build_the_config(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HYBRID_INFERENCE_MAX_CONCURRENCY", "3")
    monkeypatch.setenv("HYBRID_INFERENCE_REMOTE_PREFILL_MIN_TOKENS", "auto")
    monkeypatch.setenv("HYBRID_INFERENCE_PREDICTED_TTFT_SECONDS", "0.25")
    args = build_parser().parse_args(["decode", "--prefill", "prefill:50051", "--fallback", "fail"])
    config = build_config(args)
    assert (config.max_concurrency, config.remote_prefill_min_tokens) == (3, 32)
    assert (config.prefill, config.fallback.value, config.predicted_ttft_s) == ("prefill:50051", "fail", 0.25)
    assert served_name("meta-llama/Llama-3.1-8B") == "meta-llama/Llama-3.1-8B"


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--prefill", "nohost"], "HOST:PORT"),
        (["--remote-prefill-min-tokens", "many"], "positive integer"),
        (["--max-concurrency", "0"], "--max-concurrency 0"),
        (["--kv-cache-bytes", "0KiB"], "--kv-cache-bytes '0KiB': must be greater than 0"),
        (["--tls-cert", "/no/such.pem", "--tls-key", "/no/key.pem"], "no such file"),
    ],
)
def test_bad_flags_are_user_errors_naming_the_value(flags: list[str], message: str) -> None:
    from hybrid_workers.errors import UserError

    with pytest.raises(UserError, match=message):
        build_config(build_parser().parse_args(["decode", *flags]))
