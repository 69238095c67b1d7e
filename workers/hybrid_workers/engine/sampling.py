"""Sampling: greedy, temperature, top-k, top-p; seeded per step so split runs match single-machine runs."""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from hybrid_workers.errors import UserError

_SEED_MIX = 0x9E3779B97F4A7C15  # golden-ratio constant: spreads (seed, step) pairs over the seed space
# Temperatures below this pick the argmax (as vLLM does): dividing logits by, say, 1e-300 overflows
# float32 to inf and softmax to NaN, while the distribution it stands for is the argmax anyway.
GREEDY_BELOW_TEMPERATURE = 1e-5
# Seeds travel as int64 on the KV wire and seed torch's generator: [0, 2^63).
SEED_LIMIT = 1 << 63


@dataclass(frozen=True)
class SamplingParams:
    """How to pick tokens; validated on construction (UserError names the field and the value)."""

    max_tokens: int = 16  # tokens to generate at most (0 allowed: score the prompt only)
    temperature: float = 1.0  # 0 (or below GREEDY_BELOW_TEMPERATURE) = greedy; else logits / temperature
    top_k: int = 0  # keep only the k most likely tokens; 0 = off (at most 2^32 - 1: the wire's uint32)
    top_p: float = 1.0  # keep the smallest set of tokens whose probability reaches top_p; 1 = off
    seed: int | None = None  # same seed, same tokens; None = fresh randomness
    stop: tuple[str, ...] = ()  # generation ends before the first occurrence of any of these
    stop_token_ids: tuple[int, ...] = ()  # generation ends after any of these (as after EOS)
    ignore_eos: bool = False  # EOS does not end generation (benchmarks fixing the output length)
    min_tokens: int = 0  # EOS and stop_token_ids cannot be drawn before this many tokens
    suppressed: tuple[int, ...] = ()  # the ids min_tokens holds back (EOS + stop_token_ids; set by callers)

    def __post_init__(self) -> None:
        object.__setattr__(self, "stop", _check_stop(self.stop))
        _check_int("max_tokens", self.max_tokens, minimum=0)
        _check_int("top_k", self.top_k, minimum=0)
        _check_int("min_tokens", self.min_tokens, minimum=0)
        object.__setattr__(self, "stop_token_ids", tuple(self.stop_token_ids))
        object.__setattr__(self, "suppressed", tuple(self.suppressed))
        if self.top_k >= 1 << 32:
            raise UserError(f"top_k {self.top_k}: must be below 2^32 (0 turns it off)")
        if self.seed is not None:
            _check_int("seed", self.seed, minimum=0)
            if self.seed >= SEED_LIMIT:
                raise UserError(f"seed {self.seed}: must be below 2^63 ({SEED_LIMIT})")
        temperature = _check_float("temperature", self.temperature)
        if temperature < 0:
            raise UserError(f"temperature {self.temperature}: must be >= 0 (0 means greedy)")
        top_p = _check_float("top_p", self.top_p)
        if not 0 < top_p <= 1:
            raise UserError(f"top_p {self.top_p}: must be in (0, 1] (1 turns it off)")

    @property
    def greedy(self) -> bool:
        """True when the choice is the argmax (temperature below GREEDY_BELOW_TEMPERATURE, or top_k 1)."""
        return self.temperature < GREEDY_BELOW_TEMPERATURE or self.top_k == 1


def _check_int(name: str, value: object, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int):
        raise UserError(f"{name} {value!r}: must be an integer")
    if value < minimum:
        raise UserError(f"{name} {value}: must be >= {minimum}")


def _check_float(name: str, value: object) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise UserError(f"{name} {value!r}: must be a finite number")
    return float(value)


def _check_stop(stop: object) -> tuple[str, ...]:
    items = (stop,) if isinstance(stop, str) else stop
    if not isinstance(items, tuple | list) or not all(isinstance(s, str) and s for s in items):
        raise UserError(f"stop {stop!r}: must be a list of non-empty strings")
    return tuple(items)


def step_generator(seed: int, step: int) -> torch.Generator:
    """The CPU random generator for generation step `step` of a run seeded with `seed`."""
    mixed = (seed * _SEED_MIX + step) % (1 << 63)
    return torch.Generator(device="cpu").manual_seed(mixed)


def _filter_top_k(logits: torch.Tensor, top_k: int) -> torch.Tensor:
    """Set all but the `top_k` largest logits to -inf. logits: [vocab] -> [vocab]."""
    if top_k <= 0 or top_k >= logits.numel():
        return logits
    threshold = torch.topk(logits, top_k).values[-1]
    return logits.masked_fill(logits < threshold, -math.inf)


def _filter_top_p(logits: torch.Tensor, top_p: float) -> torch.Tensor:
    """Keep the smallest most-likely set whose probability reaches top_p. logits: [vocab] -> [vocab]."""
    if top_p >= 1.0:
        return logits
    sorted_logits, order = torch.sort(logits, descending=True)  # [vocab], [vocab]
    cumulative = torch.softmax(sorted_logits, dim=-1).cumsum(dim=-1)
    # Drop a token when the tokens before it already reach top_p. The first token always stays, also
    # when top_p is below float32's range (1e-300 compares as 0.0, and 0 >= 0 would drop every token).
    drop_sorted = (cumulative - torch.softmax(sorted_logits, dim=-1)) >= top_p
    drop_sorted[0] = False
    drop = torch.zeros_like(drop_sorted).scatter(0, order, drop_sorted)
    return logits.masked_fill(drop, -math.inf)


def sample(logits: torch.Tensor, params: SamplingParams, step: int) -> tuple[int, float]:
    """Pick the token of generation step `step` (0 = first generated token) from `logits` [vocab].

    Returns (token id, its log-probability under the model's unmodified distribution, i.e.
    log_softmax of the raw logits). The randomness depends only on (params.seed, step), so a run whose
    first token is sampled on one machine and the rest on another reproduces a single-machine run.
    """
    raw = logits.detach().reshape(-1).to("cpu", torch.float32)  # [vocab]
    logprobs = torch.log_softmax(raw, dim=-1)
    if step < params.min_tokens and params.suppressed:
        raw = raw.index_fill(0, torch.tensor(params.suppressed, dtype=torch.long), -math.inf)
    if params.greedy:
        token = int(torch.argmax(raw))
        return token, float(logprobs[token])
    filtered = _filter_top_p(_filter_top_k(raw / params.temperature, params.top_k), params.top_p)
    probs = torch.softmax(filtered, dim=-1)  # [vocab]
    generator = step_generator(params.seed, step) if params.seed is not None else None
    token = int(torch.multinomial(probs, 1, generator=generator))
    return token, float(logprobs[token])
