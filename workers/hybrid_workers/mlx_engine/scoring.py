"""Token scoring on the MLX engine (echo + logprobs, top alternatives): one teacher-forced forward pass."""

from __future__ import annotations

from collections.abc import Sequence

import mlx.core as mx

from hybrid_workers.decode.logprobs import TokenScore, scores_from_logits
from hybrid_workers.mlx_engine.arrays import to_torch_float32
from hybrid_workers.mlx_engine.loading import MlxModel


def score_tokens(mm: MlxModel, token_ids: Sequence[int], top: int) -> list[TokenScore]:
    """Logprob of each token given the ones before it, with `top` alternatives (as decode.logprobs)."""
    with mm.computing():
        logits = to_torch_float32(mm.model(mx.array([list(token_ids)]))[0])  # [seq, vocab], no cache
    return scores_from_logits(token_ids, logits, top)
