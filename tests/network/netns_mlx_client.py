"""Decode side of the MLX network test, run inside the decode namespace: remote prefill into MLX, decode.

Usage: python netns_mlx_client.py TARGET MODEL_DIR PROMPT_TOKENS NEW_TOKENS; prints one JSON line:
{"tokens": remote first token + MLX greedy tokens, "layers": layers received, "bytes": KV bytes}.
The torch prefill worker streams each layer straight into the MLX engine's slot (the decode worker's
path); no torch copy of the weights is loaded here.
"""

from __future__ import annotations

import json
import sys

from hybrid_workers.decode.prefill_client import PrefillClient
from hybrid_workers.engine import SamplingParams
from hybrid_workers.mlx_engine.engine import MlxDecodeEngine
from hybrid_workers.mlx_engine.loading import load_mlx_model


def main(target: str, model_dir: str, prompt_tokens: int, new_tokens: int) -> None:
    mm = load_mlx_model(model_dir, dtype="float32")
    engine = MlxDecodeEngine(mm)
    ids = [1, *range(8, 8 + prompt_tokens - 1)]
    params = SamplingParams(max_tokens=new_tokens, temperature=0)
    slot = engine.new_slot(len(ids), new_tokens)
    with PrefillClient(target, mm, timeout_s=120) as client:
        remote = client.prefill(ids, params, slot=slot)
    tokens = [remote.first_token]
    for step in range(1, new_tokens):
        [row] = engine.step([(slot, tokens[-1], len(ids) + step - 1)])
        tokens.append(engine.sample(row, params, step)[0])
    received = len(remote.timings.layer_received_at_s)
    print(json.dumps({"tokens": tokens, "layers": received, "bytes": remote.timings.bytes}), flush=True)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]))
