"""`hybrid-inference decode --engine mlx` as a real process, fed by a real torch prefill process over gRPC."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
from decode_servers import wait_for
from hybrid_workers.engine import SamplingParams, encode_prompt, stream_completion
from support.loopback import free_port
from worker_processes import PROMPT, prefill_ready, spawn, stop


@pytest.mark.slow
def test_torch_prefill_process_streams_into_an_mlx_decode_process(
    tiny_model_dir: Path, tiny_lm: Any, tmp_path: Path
) -> None:
    pytest.importorskip("mlx.core")
    prefill_port, api_port = free_port(), free_port()
    model = ["--model", str(tiny_model_dir)]
    prefill = spawn(
        "prefill", [*model, "--port", str(prefill_port), "--metrics-port", "0"], tmp_path / "p.log"
    )
    decode_args = [*model, "--engine", "mlx", "--port", str(api_port), "--remote-prefill-min-tokens", "8"]
    decode = spawn("decode", [*decode_args, "--prefill", f"127.0.0.1:{prefill_port}"], tmp_path / "d.log")
    try:
        url = f"http://127.0.0.1:{api_port}"
        wait_for(lambda: prefill_ready(url), "the MLX decode worker to be ready", timeout_s=180)
        name = httpx.get(url + "/v1/models").json()["data"][0]["id"]
        body = {"model": name, "prompt": PROMPT, "max_tokens": 12, "temperature": 0}
        got = httpx.post(url + "/v1/completions", json=body, timeout=60).json()["choices"][0]["text"]
        metrics_text = httpx.get(url + "/metrics").text
    finally:
        stop(decode)
        stop(prefill)
    params = SamplingParams(max_tokens=12, temperature=0)
    want = "".join(step.text for step in stream_completion(tiny_lm, encode_prompt(tiny_lm, PROMPT), params))
    assert got == want
    prompt_tokens = len(encode_prompt(tiny_lm, PROMPT))
    assert (
        f'hybrid_inference_prompt_tokens_total{{model="{name}",prefill="remote"}} {prompt_tokens}.0'
        in metrics_text
    )
    log = (tmp_path / "d.log").read_text()
    assert "engine mlx on cpu" in log and "prefill=remote" in log
