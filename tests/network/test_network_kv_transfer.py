"""The KV transfer across a real, rate-limited link: prefill worker and decode client in two namespaces."""

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
def link_results(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    """Run both modes once across a 1 Gbit/s tbf-shaped veth link; mode -> the client's report, and
    "hold" -> how the prefill's hold of its first last layer ended (see netns_prefill.py)."""
    reason = skip_reason()
    if reason:
        pytest.skip(reason)
    signals = tmp_path_factory.mktemp("signals")
    here = Path(__file__).parent
    with shaped_link("1gbit") as link:
        target = f"{link.prefill_ip}:50051"
        server = [sys.executable, str(here / "netns_prefill.py"), target, str(tiny_model_dir), str(signals)]
        worker = subprocess.Popen(link.argv(link.prefill_ns, server), stdout=subprocess.PIPE, text=True)
        try:
            assert worker.stdout is not None and "prefill worker" in worker.stdout.readline()
            client = [sys.executable, str(here / "netns_client.py"), target, str(tiny_model_dir)]
            client += [str(PROMPT_TOKENS), str(signals), "layerwise", "bulk"]
            done = subprocess.run(
                link.argv(link.decode_ns, client), capture_output=True, text=True, timeout=240
            )
            assert done.returncode == 0, done.stderr[-2000:]
        finally:
            worker.terminate()
            worker.wait(timeout=30)
    reports = {report["mode"]: report for report in map(json.loads, done.stdout.splitlines())}
    return {**reports, "hold": {"ended": (signals / "hold-ended").read_text()}}


@pytest.mark.parametrize("mode", ["layerwise", "bulk"])
def test_kv_transfer_across_the_link_is_exact(link_results: dict[str, dict], mode: str) -> None:
    report = link_results[mode]
    assert len(report["reference"]) >= 2
    assert report["tokens"][: len(report["reference"])] == report["reference"]


def test_layerwise_receives_layer_zero_before_the_prefill_finished_its_last_layer(link_results) -> None:
    # The prefill held its last layer until the decode side had layer 0: only a layerwise stream can
    # deliver layer 0 while the forward pass is still running (bulk would wait for the whole pass).
    assert link_results["hold"]["ended"] == "received"
