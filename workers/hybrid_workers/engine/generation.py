"""One completion as a stream of text steps: prefill (or a prefill done elsewhere), then decode."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Protocol

from hybrid_workers.engine.decode import decode
from hybrid_workers.engine.detokenize import TextAssembler
from hybrid_workers.engine.loading import LoadedModel
from hybrid_workers.engine.prefill import check_token_ids, prefill
from hybrid_workers.engine.sampling import SamplingParams, sample
from hybrid_workers.errors import UserError

FinishReason = Literal["stop", "length"]


@dataclass(frozen=True)
class TextStep:
    """One generated token with the text it releases."""

    token_id: int
    logprob: float
    text: str  # new text released by this token (stop strings removed; may be empty)
    finish_reason: FinishReason | None  # set on the last step only


def check_budget(lm: LoadedModel, prompt_tokens: int, max_tokens: int) -> None:
    """Raise UserError unless prompt + max_tokens fit in the model's context."""
    if prompt_tokens + max_tokens > lm.max_context:
        raise UserError(
            f"prompt of {prompt_tokens} tokens + max_tokens {max_tokens} exceed the model's context of "
            f"{lm.max_context} tokens; shorten the prompt or lower max_tokens"
        )


def encode_prompt(lm: LoadedModel, text: str, max_tokens: int = 0) -> list[int]:
    """Token ids of a prompt; UserError for an empty prompt or one that leaves no room for max_tokens.

    The check is: len(ids) + max_tokens <= max_context (as vLLM does).
    """
    if not isinstance(text, str) or text == "":
        raise UserError(f"prompt {text!r}: empty; give some text")
    ids = [int(t) for t in lm.tokenizer.encode(text)]
    check_budget(lm, len(ids), max_tokens)
    return ids


class Prefilled(Protocol):
    """A prompt prefilled elsewhere, e.g. `decode.prefill_client.RemotePrefill`: its filled cache, the
    first token sampled from it (step 0) and that token's logprob."""

    @property
    def cache(self) -> Any: ...  # transformers DynamicCache with every layer of the prompt

    @property
    def first_token(self) -> int: ...

    @property
    def first_logprob(self) -> float: ...


def _token_stream(
    lm: LoadedModel, prompt_ids: Sequence[int], params: SamplingParams, first: Prefilled | None
) -> Iterator[tuple[int, float]]:
    """(token, logprob) of steps 0, 1, 2, ...: the first from `first` or a local prefill."""
    if first is None:
        result = prefill(lm, prompt_ids)
        cache = result.cache
        token, logprob = sample(result.logits, params, 0)
    else:
        cache, token, logprob = first.cache, first.first_token, first.first_logprob
    yield token, logprob
    for step in decode(lm, cache, token, len(prompt_ids), params):
        yield step.token_id, step.logprob


def stream_completion(
    lm: LoadedModel, prompt_ids: Sequence[int], params: SamplingParams, first: Prefilled | None = None
) -> Iterator[TextStep]:
    """Generate a completion of `prompt_ids`, one TextStep per token, the last with a finish reason.

    Ends with "stop" at an EOS token (unless params.ignore_eos) or one of params.stop_token_ids
    (yielded with empty text) or a stop string (text cut before it), and with "length" at max_tokens
    or when the context is full. max_tokens 0 yields nothing.
    `first` continues a prefill done elsewhere; otherwise the prompt is prefilled here.
    """
    check_token_ids(lm, prompt_ids)
    check_budget(lm, len(prompt_ids), params.max_tokens)
    if params.max_tokens == 0:
        return
    text = TextAssembler(lm.tokenizer, params.stop)
    room = min(params.max_tokens, lm.max_context - len(prompt_ids))
    ends = set(params.stop_token_ids) | (set() if params.ignore_eos else set(lm.eos_token_ids))
    for count, (token, logprob) in enumerate(_token_stream(lm, prompt_ids, params, first), start=1):
        if token in ends:
            yield TextStep(token, logprob, text.flush(), "stop")
            return
        delta = text.add(token)
        if text.stopped:
            yield TextStep(token, logprob, delta, "stop")
            return
        if count >= room:
            yield TextStep(token, logprob, delta + text.flush(), "length")
            return
        yield TextStep(token, logprob, delta, None)
