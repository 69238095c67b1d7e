"""Token scoring for `echo` + `logprobs` (lm-eval's loglikelihood) and for top-logprob alternatives.

One teacher-forced forward pass over prompt + completion gives, at every position, the distribution
the model assigned to the token that follows. When a request asks for prompt logprobs or for top
alternatives, every logprob it reports comes from this one pass, so a token's own logprob and the
alternatives' are always consistent (lm-eval compares them to decide "is greedy").
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch

from hybrid_workers.engine.loading import LoadedModel


@dataclass(frozen=True)
class TokenScore:
    """One token with its logprob and the most likely alternatives at its position."""

    token_id: int
    logprob: float | None  # None for the first token of the sequence (nothing predicts it)
    top: tuple[tuple[int, float], ...]  # (token id, logprob), most likely first; empty when not asked


def score_tokens(lm: LoadedModel, token_ids: Sequence[int], top: int) -> list[TokenScore]:
    """Logprob of each token given the ones before it, with `top` alternatives per position."""
    ids = torch.tensor([list(token_ids)], dtype=torch.long, device=lm.device)  # [1, seq]
    with torch.no_grad():
        logits = lm.model(input_ids=ids, use_cache=False).logits[0].float()  # [seq, vocab]
    return scores_from_logits(token_ids, logits, top)


def scores_from_logits(token_ids: Sequence[int], logits: torch.Tensor, top: int) -> list[TokenScore]:
    """TokenScores from any engine's teacher-forced logits [seq, vocab] over `token_ids`."""
    ids = torch.tensor(list(token_ids), dtype=torch.long, device=logits.device)  # [seq]
    logprobs = torch.log_softmax(logits[:-1].float(), dim=-1)  # [seq-1, vocab]; row p scores token p+1
    chosen = logprobs.gather(1, ids[1:, None])[:, 0].tolist()  # [seq-1]
    alternatives = _top(logprobs, top)
    scores = [TokenScore(int(token_ids[0]), None, ())]
    for position, token in enumerate(token_ids[1:]):
        scores.append(TokenScore(int(token), chosen[position], alternatives[position]))
    return scores


def _top(logprobs: torch.Tensor, top: int) -> list[tuple[tuple[int, float], ...]]:
    """Per row of logprobs [rows, vocab], the `top` largest as (id, logprob) pairs."""
    if top == 0:
        return [()] * logprobs.shape[0]
    values, indices = torch.topk(logprobs, top, dim=-1)  # [rows, top] each
    return [tuple(zip(i, v, strict=True)) for i, v in zip(indices.tolist(), values.tolist(), strict=True)]
