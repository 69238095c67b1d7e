"""Decode side of the network test, run inside the decode namespace: remote prefill, then greedy decode.

Usage: python netns_client.py TARGET MODEL_DIR PROMPT_TOKENS SIGNAL_DIR MODE...; prints one JSON line per
mode: {"mode", "tokens" (remote first token + local greedy), "reference" (generate on this machine),
"transport" (tcp: the data connection carried the layers)}.
The first time layer 0 is complete here it creates SIGNAL_DIR/layer0-received (see netns_prefill.py).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import torch
from hybrid_workers.decode import prefill_client
from hybrid_workers.decode.prefill_client import PrefillClient
from hybrid_workers.engine import CacheBuilder, SamplingParams, decode, load_model

NEW_TOKENS = 8


def signal_layer_zero(signal_dir: Path) -> None:
    """Have the client's cache builder create the signal file when layer 0 is complete on this side."""

    class SignallingBuilder(CacheBuilder):
        def add_layer(self, index, keys, values) -> None:  # type: ignore[no-untyped-def]
            super().add_layer(index, keys, values)
            if index == 0:
                (signal_dir / "layer0-received").touch()

    prefill_client.CacheBuilder = SignallingBuilder  # type: ignore[misc]


def main(target: str, model_dir: str, prompt_tokens: int, signal_dir: str, modes: list[str]) -> None:
    signal_layer_zero(Path(signal_dir))
    lm = load_model(model_dir, device="cpu", dtype="float32", progress=False)
    ids = [1, *range(8, 8 + prompt_tokens - 1)]
    params = SamplingParams(max_tokens=NEW_TOKENS, temperature=0)
    with torch.no_grad():
        inputs = torch.tensor([ids])  # [1, seq]
        output = lm.model.generate(inputs, attention_mask=torch.ones_like(inputs), max_new_tokens=NEW_TOKENS)
    reference = output[0, len(ids) :].tolist()
    for mode in modes:
        with PrefillClient(target, lm, mode=mode, timeout_s=120) as client:
            remote = client.prefill(ids, params)
        tokens = [remote.first_token]
        for step in decode(lm, remote.cache, remote.first_token, len(ids), params):
            if len(tokens) == NEW_TOKENS:
                break
            tokens.append(step.token_id)
        report = {
            "mode": mode,
            "tokens": tokens,
            "reference": reference,
            "transport": remote.timings.transport,
        }
        print(json.dumps(report), flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4], sys.argv[5:])
