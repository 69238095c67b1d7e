"""Helpers of the KV transfer tests: deterministic prompts, remote greedy decoding, the generate reference."""

from __future__ import annotations

import torch


def prompt(length: int, seed: int = 0) -> list[int]:
    """A deterministic prompt: BOS, then `length - 1` ids clear of the special tokens (pad is 3)."""
    generator = torch.Generator().manual_seed(seed)
    return [1, *torch.randint(8, 1000, (length - 1,), generator=generator).tolist()]


def remote_greedy(lm, remote, prompt_len: int, new_tokens: int) -> list[int]:
    """The first token from the prefill worker, then greedy decode on this side from its cache."""
    from hybrid_workers.engine import SamplingParams, decode

    params = SamplingParams(max_tokens=new_tokens, temperature=0)
    tokens = [remote.first_token]
    for step in decode(lm, remote.cache, remote.first_token, prompt_len, params):
        if len(tokens) == new_tokens:
            break
        tokens.append(step.token_id)
    return tokens


def generate_greedy(lm, token_ids: list[int], new_tokens: int) -> list[int]:
    """transformers' own greedy generate on one machine: the reference."""
    with torch.no_grad():
        inputs = torch.tensor([token_ids])  # [1, seq]
        output = lm.model.generate(
            inputs,
            attention_mask=torch.ones_like(inputs),  # no token is padding, whatever its id
            max_new_tokens=new_tokens,
            do_sample=False,
        )
    return output[0, len(token_ids) :].tolist()


def assert_matches_generate(lm, remote, token_ids: list[int], new_tokens: int = 8) -> None:
    """Remote first token + local greedy decode == generate's tokens (which may stop early at EOS)."""
    reference = generate_greedy(lm, token_ids, new_tokens)
    assert len(reference) >= 2, "the reference ended at once; pick another prompt"
    assert remote_greedy(lm, remote, len(token_ids), new_tokens)[: len(reference)] == reference
