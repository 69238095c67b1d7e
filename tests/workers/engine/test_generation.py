"""stream_completion(): stop strings, EOS, max_tokens, text deltas, remote continuation, prompt checks."""

from __future__ import annotations

import dataclasses
from types import SimpleNamespace

import pytest
from hybrid_workers.engine import (
    CacheBuilder,
    SamplingParams,
    encode_prompt,
    prefill,
    sample,
    stream_completion,
)
from hybrid_workers.errors import UserError

PROMPT = "The key and value tensors of a layer are final"


def _run(lm, params: SamplingParams, first=None):
    ids = encode_prompt(lm, PROMPT, params.max_tokens)
    return list(stream_completion(lm, ids, params, first))


def test_text_deltas_join_to_the_decoded_tokens_and_max_tokens_ends_with_length(tiny_lm):
    steps = _run(tiny_lm, SamplingParams(max_tokens=24, temperature=0))
    assert len(steps) == 24
    assert [s.finish_reason for s in steps] == [None] * 23 + ["length"]
    text = "".join(s.text for s in steps)
    assert text == tiny_lm.tokenizer.decode([s.token_id for s in steps], skip_special_tokens=True)


def test_a_stop_string_cuts_the_text_before_it(tiny_lm):
    full = "".join(s.text for s in _run(tiny_lm, SamplingParams(max_tokens=40, temperature=0)))
    stop = full[10:14]  # a piece of the greedy output, likely spanning tokens
    steps = _run(tiny_lm, SamplingParams(max_tokens=40, temperature=0, stop=(stop, "\u2603never")))
    text = "".join(s.text for s in steps)
    assert text == full[: full.index(stop)]
    assert steps[-1].finish_reason == "stop"
    assert len(steps) < 40


def test_an_eos_token_ends_with_stop_and_no_text(tiny_lm):
    greedy = _run(tiny_lm, SamplingParams(max_tokens=20, temperature=0))
    eos = greedy[5].token_id
    lm = dataclasses.replace(tiny_lm, eos_token_ids=frozenset({eos}))
    steps = _run(lm, SamplingParams(max_tokens=20, temperature=0))
    first_eos = next(i for i, s in enumerate(greedy) if s.token_id == eos)
    assert len(steps) == first_eos + 1
    assert steps[-1].finish_reason == "stop"
    assert steps[-1].token_id == eos
    assert "".join(s.text for s in steps) == "".join(s.text for s in greedy[:first_eos])


def test_ignore_eos_runs_to_max_tokens_and_stop_token_ids_end_like_eos(tiny_lm):
    greedy = _run(tiny_lm, SamplingParams(max_tokens=20, temperature=0))
    eos = greedy[5].token_id
    first_eos = next(i for i, s in enumerate(greedy) if s.token_id == eos)
    lm = dataclasses.replace(tiny_lm, eos_token_ids=frozenset({eos}))
    ignoring = _run(lm, SamplingParams(max_tokens=20, temperature=0, ignore_eos=True))
    assert [s.token_id for s in ignoring] == [s.token_id for s in greedy]
    assert ignoring[-1].finish_reason == "length"
    by_id = _run(tiny_lm, SamplingParams(max_tokens=20, temperature=0, stop_token_ids=(eos,)))
    assert len(by_id) == first_eos + 1 and by_id[-1].finish_reason == "stop"


def test_min_tokens_holds_eos_back_until_that_many_tokens(tiny_lm):
    greedy = _run(tiny_lm, SamplingParams(max_tokens=20, temperature=0))
    eos = greedy[2].token_id
    first_eos = next(i for i, s in enumerate(greedy) if s.token_id == eos)
    lm = dataclasses.replace(tiny_lm, eos_token_ids=frozenset({eos}))
    minimum = first_eos + 3
    params = SamplingParams(max_tokens=20, temperature=0, min_tokens=minimum, suppressed=(eos,))
    steps = _run(lm, params)
    assert len(steps) >= minimum
    assert eos not in [s.token_id for s in steps[:minimum]]
    assert [s.token_id for s in steps[:first_eos]] == [s.token_id for s in greedy[:first_eos]]


def test_a_seeded_run_continued_from_a_rebuilt_cache_reproduces_the_local_run(tiny_lm):
    """The first token sampled after a 'remote' prefill (step 0) plus local decode = one-machine run."""
    params = SamplingParams(max_tokens=30, temperature=0.9, top_p=0.95, seed=42)
    ids = encode_prompt(tiny_lm, PROMPT, params.max_tokens)
    builder = CacheBuilder(tiny_lm)
    result = prefill(tiny_lm, ids, lambda i, k, v: builder.add_layer(i, k.clone(), v.clone()))
    token, logprob = sample(result.logits, params, 0)
    prefilled = SimpleNamespace(cache=builder.build(), first_token=token, first_logprob=logprob)
    remote = list(stream_completion(tiny_lm, ids, params, prefilled))
    local = _run(tiny_lm, params)
    assert [(s.token_id, s.text) for s in remote] == [(s.token_id, s.text) for s in local]
    other_seed = _run(tiny_lm, dataclasses.replace(params, seed=43))
    assert [s.token_id for s in other_seed] != [s.token_id for s in local]


def test_max_tokens_zero_yields_nothing(tiny_lm):
    assert _run(tiny_lm, SamplingParams(max_tokens=0)) == []


def test_empty_prompt_is_refused(tiny_lm):
    with pytest.raises(UserError, match="empty"):
        encode_prompt(tiny_lm, "")


def test_prompt_longer_than_the_context_is_refused_with_the_numbers(tiny_lm):
    long_text = "tensor " * 600
    with pytest.raises(
        UserError, match=r"prompt of \d+ tokens \+ max_tokens 0 exceed the model's context of 512"
    ):
        encode_prompt(tiny_lm, long_text)


def test_prompt_plus_max_tokens_must_fit(tiny_lm):
    ids = encode_prompt(tiny_lm, PROMPT)
    with pytest.raises(UserError, match=f"prompt of {len(ids)} tokens \\+ max_tokens 510"):
        encode_prompt(tiny_lm, PROMPT, max_tokens=510)
    with pytest.raises(UserError, match="max_tokens 510"):
        list(stream_completion(tiny_lm, ids, SamplingParams(max_tokens=510)))
