"""`hybrid-inference prefill` as a real process: serves KV transfers, exports /metrics, stops on SIGTERM."""

from __future__ import annotations

import signal
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest
from hybrid_workers.decode.prefill_client import PrefillClient
from hybrid_workers.engine import SamplingParams
from kv_transfer_helpers import assert_matches_generate, prompt
from support.loopback import free_port


def metric(text: str, name: str) -> float:
    """Sum of a metric's samples in a Prometheus exposition."""
    return sum(float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name + "{"))


@pytest.mark.slow
def test_prefill_command_serves_metrics_and_stops_cleanly(tiny_lm, tiny_model_dir: Path) -> None:
    port, metrics_port = free_port(), free_port()
    argv = [
        sys.executable,
        "-m",
        "hybrid_workers",
        "prefill",
        "--model",
        str(tiny_model_dir),
        "--host",
        "127.0.0.1",
    ]
    argv += [
        "--port",
        str(port),
        "--metrics-port",
        str(metrics_port),
        "--device",
        "cpu",
        "--dtype",
        "float32",
    ]
    worker = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert worker.stdout is not None
        banner = worker.stdout.readline()
        assert f"127.0.0.1:{port}" in banner and "plaintext" in banner, banner
        ids = prompt(33, seed=9)
        with PrefillClient(f"127.0.0.1:{port}", tiny_lm) as client:
            remote = client.prefill(ids, SamplingParams(max_tokens=8, temperature=0))
        assert_matches_generate(tiny_lm, remote, ids)
        text = urllib.request.urlopen(f"http://127.0.0.1:{metrics_port}/metrics", timeout=10).read().decode()
        assert metric(text, "hybrid_inference_prefill_tokens_total") == 33
        assert metric(text, "hybrid_inference_kv_send_bytes_total") == remote.timings.bytes
        # the default data connection (--kv-data-port auto): one frame per layer beside header + trailer
        assert remote.timings.transport == "tcp"
        assert metric(text, "hybrid_inference_kv_frames_sent_total") == 2 + tiny_lm.num_layers
        assert metric(text, "hybrid_inference_prefill_compute_tokens_total") == 33
        assert 'mode="layerwise",model="demo-tiny",transport="tcp"} 33.0' in text
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(timeout=30) == 0
    finally:
        worker.kill()
        worker.wait()


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--chunk-bytes", "1KiB"], "--chunk-bytes '1KiB': chunk size 1024 bytes out of range; use 65536"),
        (["--chunk-bytes", "lots"], "--chunk-bytes 'lots': give a byte count"),
        (
            ["--tls-cert", "/nonexistent.pem", "--tls-key", "/nonexistent.key"],
            "--tls-cert /nonexistent.pem: no such",
        ),
        (["--max-queue", "0"], "--max-queue 0: must be at least 1"),
    ],
)
def test_bad_flags_fail_before_loading_the_model(
    flags: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from hybrid_workers.cli import main

    assert main(["prefill", "--model", "/nonexistent", *flags]) == 2
    assert message in capsys.readouterr().err
