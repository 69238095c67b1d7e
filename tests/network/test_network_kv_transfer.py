"""The KV transfer across a real, rate-limited link: prefill worker and decode client in two namespaces,
the layers' bytes on the data connection (the default)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
from netns_link import prefill_across, run_decode_side

pytestmark = [pytest.mark.network, pytest.mark.slow]
PROMPT_TOKENS = 500  # the tiny model's 4 layers x 2 x 500 x 2 heads x 16 dims x 4 B = 125 KiB per layer
HERE = Path(__file__).parent


@pytest.fixture(scope="module")
def link_results(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict]:
    """Run both modes once across a 1 Gbit/s tbf-shaped veth link; mode -> the client's report, and
    "hold" -> how the prefill's hold of its first last layer ended (see netns_prefill.py)."""
    signals = tmp_path_factory.mktemp("signals")

    def worker(link) -> list[str]:  # type: ignore[no-untyped-def]
        target = f"{link.prefill_ip}:50051"
        return [sys.executable, str(HERE / "netns_prefill.py"), target, str(tiny_model_dir), str(signals)]

    with prefill_across("1gbit", worker) as link:
        client = [sys.executable, str(HERE / "netns_client.py"), f"{link.prefill_ip}:50051"]
        client += [str(tiny_model_dir), str(PROMPT_TOKENS), str(signals), "layerwise", "bulk"]
        lines = run_decode_side(link, client)
    reports = {report["mode"]: report for report in map(json.loads, lines)}
    return {**reports, "hold": {"ended": (signals / "hold-ended").read_text()}}


@pytest.mark.parametrize("mode", ["layerwise", "bulk"])
def test_kv_transfer_across_the_link_is_exact(link_results: dict[str, dict], mode: str) -> None:
    report = link_results[mode]
    assert report["transport"] == "tcp"  # the layers crossed the link on the data connection
    assert len(report["reference"]) >= 2
    assert report["tokens"][: len(report["reference"])] == report["reference"]


def test_layerwise_receives_layer_zero_before_the_prefill_finished_its_last_layer(link_results) -> None:
    # The prefill held its last layer until the decode side had layer 0: only a layerwise stream can
    # deliver layer 0 while the forward pass is still running (bulk would wait for the whole pass).
    assert link_results["hold"]["ended"] == "received"
