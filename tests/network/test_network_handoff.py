"""The hand-off across a real, rate-limited link: prefill worker and decode client in two namespaces."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from netns_link import shaped_link, skip_reason

pytestmark = [pytest.mark.network, pytest.mark.slow]
PROMPT_TOKENS = 500  # the tiny model's 4 layers x 2 x 500 x 2 heads x 16 dims x 4 B = 125 KiB per layer


@pytest.fixture(scope="module")
def link_results(tiny_model_dir: Path) -> dict[str, dict]:
    """Run both modes once across a 1 Gbit/s tbf-shaped veth link; mode -> the client's report."""
    reason = skip_reason()
    if reason:
        pytest.skip(reason)
    with shaped_link("1gbit") as link:
        worker_argv = [sys.executable, "-m", "hybrid_workers", "prefill", "--model", str(tiny_model_dir)]
        worker_argv += [
            "--host",
            link.prefill_ip,
            "--port",
            "50051",
            "--metrics-port",
            "0",
            "--device",
            "cpu",
        ]
        worker = subprocess.Popen(link.argv(link.prefill_ns, worker_argv), stdout=subprocess.PIPE, text=True)
        try:
            assert worker.stdout is not None and "prefill worker" in worker.stdout.readline()
            client = [
                sys.executable,
                str(Path(__file__).with_name("netns_client.py")),
                f"{link.prefill_ip}:50051",
            ]
            client += [str(tiny_model_dir), str(PROMPT_TOKENS), "layerwise", "bulk"]
            done = subprocess.run(
                link.argv(link.decode_ns, client), capture_output=True, text=True, timeout=240
            )
            assert done.returncode == 0, done.stderr[-2000:]
        finally:
            worker.terminate()
            worker.wait(timeout=30)
    return {report["mode"]: report for report in map(json.loads, done.stdout.splitlines())}


@pytest.mark.parametrize("mode", ["layerwise", "bulk"])
def test_hand_off_across_the_link_is_exact(link_results: dict[str, dict], mode: str) -> None:
    report = link_results[mode]
    assert len(report["reference"]) >= 2
    assert report["tokens"][: len(report["reference"])] == report["reference"]


def test_layerwise_receives_layer_zero_before_the_prefill_finished_its_last_layer(link_results) -> None:
    timings = link_results["layerwise"]["timings"]
    # decode clock from the request's send vs prefill clock from its (later) arrival: conservative
    assert timings["layer_received_at_s"][0] < timings["layer_done_at_s"][-1]
