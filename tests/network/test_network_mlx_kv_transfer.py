"""The KV transfer into the MLX engine across a real, rate-limited link (two namespaces), as for torch."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest
import torch
from netns_link import prefill_across, prefill_cli, run_decode_side

pytestmark = [pytest.mark.network, pytest.mark.slow]
PROMPT_TOKENS = 400
NEW_TOKENS = 16


def test_torch_prefill_in_one_namespace_streams_into_mlx_decode_in_the_other(
    tiny_model_dir: Path, tiny_lm: Any
) -> None:
    pytest.importorskip("mlx.core")
    with prefill_across("1gbit", lambda link: prefill_cli(link, str(tiny_model_dir))) as link:
        client = [sys.executable, str(Path(__file__).with_name("netns_mlx_client.py"))]
        client += [f"{link.prefill_ip}:50051", str(tiny_model_dir), str(PROMPT_TOKENS), str(NEW_TOKENS)]
        lines = run_decode_side(link, client)
    report = json.loads(lines[-1])
    ids = torch.tensor([[1, *range(8, 8 + PROMPT_TOKENS - 1)]])  # [1, seq], as the client sends
    with torch.no_grad():
        output = tiny_lm.model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=NEW_TOKENS)
    reference = output[0, ids.shape[1] :].tolist()  # the torch engine on one machine
    assert report["layers"] == tiny_lm.num_layers
    assert report["tokens"][: len(reference)] == reference and len(reference) >= 2
