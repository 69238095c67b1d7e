"""The KV transfer into the MLX engine across a real, rate-limited link (two namespaces), as for torch."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from netns_link import shaped_link, skip_reason

pytestmark = [pytest.mark.network, pytest.mark.slow]
PROMPT_TOKENS = 400
NEW_TOKENS = 16


def test_torch_prefill_in_one_namespace_streams_into_mlx_decode_in_the_other(
    tiny_model_dir: Path, tiny_lm: Any
) -> None:
    pytest.importorskip("mlx.core")
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
            client = [sys.executable, str(Path(__file__).with_name("netns_mlx_client.py"))]
            client += [f"{link.prefill_ip}:50051", str(tiny_model_dir), str(PROMPT_TOKENS), str(NEW_TOKENS)]
            done = subprocess.run(
                link.argv(link.decode_ns, client), capture_output=True, text=True, timeout=240
            )
            assert done.returncode == 0, done.stderr[-2000:]
        finally:
            worker.terminate()
            worker.wait(timeout=30)
    report = json.loads(done.stdout.splitlines()[-1])
    ids = torch.tensor([[1, *range(8, 8 + PROMPT_TOKENS - 1)]])  # [1, seq], as the client sends
    with torch.no_grad():
        output = tiny_lm.model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=NEW_TOKENS)
    reference = output[0, ids.shape[1] :].tolist()  # the torch engine on one machine
    assert report["layers"] == tiny_lm.num_layers
    assert report["tokens"][: len(reference)] == reference and len(reference) >= 2
