"""sample() and SamplingParams: validation, greedy, seeded reproducibility, top-k / top-p, logprobs."""

from __future__ import annotations

import pytest
import torch
from hybrid_workers.engine import SamplingParams, sample
from hybrid_workers.errors import UserError

VOCAB = 1024


def _logits(seed: int = 0) -> torch.Tensor:
    return torch.randn(VOCAB, generator=torch.Generator().manual_seed(seed)) * 2  # [vocab]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"max_tokens": -1}, "max_tokens -1"),
        ({"temperature": -0.5}, "temperature -0.5"),
        ({"temperature": float("nan")}, "temperature nan"),
        ({"top_p": 0.0}, r"top_p 0.0: must be in \(0, 1\]"),
        ({"top_p": 1.5}, "top_p 1.5"),
        ({"top_k": -3}, "top_k -3"),
        ({"max_tokens": 2.5}, "max_tokens 2.5"),
        ({"seed": -1}, "seed -1"),
        ({"seed": 2**63}, "seed 9223372036854775808: must be below 2"),
        ({"top_k": 2**32}, "top_k 4294967296: must be below 2"),
        ({"stop": ("",)}, "stop"),
        ({"stop": (3,)}, "stop"),
    ],
)
def test_bad_parameters_are_refused_naming_field_and_value(kwargs, message):
    with pytest.raises(UserError, match=message):
        SamplingParams(**kwargs)


def test_a_single_stop_string_and_a_list_become_a_tuple():
    assert SamplingParams(stop="END").stop == ("END",)
    assert SamplingParams(stop=["a", "b"]).stop == ("a", "b")  # type: ignore[arg-type]


def test_temperature_zero_is_argmax_with_its_raw_logprob():
    logits = _logits()
    token, logprob = sample(logits, SamplingParams(temperature=0), step=0)
    assert token == int(torch.argmax(logits))
    assert logprob == pytest.approx(float(torch.log_softmax(logits, -1)[token]))


@pytest.mark.parametrize("tiny", [1e-300, 1e-40, 5e-324, 1e-6])
@pytest.mark.parametrize("knob", ["temperature", "top_p"])
def test_a_tiny_temperature_or_top_p_picks_the_argmax_instead_of_nan(knob, tiny):
    logits = _logits()
    token, logprob = sample(logits, SamplingParams(seed=3, **{knob: tiny}), step=0)
    assert token == int(torch.argmax(logits))
    assert logprob == pytest.approx(float(torch.log_softmax(logits, -1)[token]))


def test_same_seed_and_step_reproduce_and_different_seeds_differ():
    logits = _logits()
    runs = {
        seed: [sample(logits, SamplingParams(seed=seed), step)[0] for step in range(20)] for seed in (1, 2)
    }
    again = [sample(logits, SamplingParams(seed=1), step)[0] for step in range(20)]
    assert runs[1] == again
    assert runs[1] != runs[2]
    assert len(set(runs[1])) > 1  # different steps draw differently


def test_top_k_one_equals_greedy_at_any_temperature():
    for seed in range(5):
        logits = _logits(seed)
        sampled = sample(logits, SamplingParams(top_k=1, temperature=1.7, seed=seed), step=3)
        assert sampled == sample(logits, SamplingParams(temperature=0), step=3)


def test_top_k_draws_only_among_the_k_most_likely():
    logits = _logits()
    allowed = set(torch.topk(logits, 5).indices.tolist())
    drawn = {sample(logits, SamplingParams(top_k=5, temperature=5.0, seed=7), step)[0] for step in range(200)}
    assert drawn <= allowed
    assert len(drawn) > 1


def test_top_p_keeps_the_smallest_set_reaching_p():
    logits = torch.log(torch.tensor([0.5, 0.3, 0.15, 0.05]))  # [vocab=4]
    drawn = {sample(logits, SamplingParams(top_p=0.7, seed=3), step)[0] for step in range(300)}
    assert drawn == {0, 1}  # 0.5 < 0.7 needs the second token; 0.8 >= 0.7 stops there
    tiny_p = {sample(logits, SamplingParams(top_p=0.01, seed=3), step)[0] for step in range(50)}
    assert tiny_p == {0}


def test_logprob_is_under_the_unmodified_distribution():
    logits = _logits()
    params = SamplingParams(top_k=3, temperature=0.3, seed=11)
    token, logprob = sample(logits, params, step=0)
    assert logprob == pytest.approx(float(torch.log_softmax(logits, -1)[token]))
    assert logprob < 0


def test_sampling_frequencies_follow_the_distribution():
    probs = torch.tensor([0.6, 0.3, 0.1])
    draws = [sample(torch.log(probs), SamplingParams(seed=5), step)[0] for step in range(3000)]
    share = draws.count(0) / len(draws)
    assert 0.55 < share < 0.65
