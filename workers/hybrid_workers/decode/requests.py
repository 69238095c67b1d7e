"""HTTP request bodies -> `GenerationRequest`: tokenized prompt + SamplingParams, checked against limits.

Everything a client can get wrong is caught here and raised as an `ApiError` (4xx) naming the
parameter and its value, before any model work starts. The cheap checks (parameters, counts, sizes)
come before the prompt is tokenised; the whole translation runs in a worker thread (see app.py).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from hybrid_workers.decode.api_errors import ApiError, bad_request
from hybrid_workers.decode.prompts import Limits, chat_prompt, completion_prompt, prompt_text
from hybrid_workers.decode.schemas import ChatCompletionRequest, CompletionRequest, _SamplingFields
from hybrid_workers.engine.sampling import SamplingParams
from hybrid_workers.errors import UserError

__all__ = ["Endpoint", "GenerationRequest", "Limits", "check_model", "from_chat", "from_completion"]

_NO_STREAM_SCORING = (
    "{}: top logprob alternatives and prompt logprobs need a scoring pass after generation, "
    "so they are available with stream=false only (plain per-token logprobs stream fine)"
)
# Parameters accepted only at their neutral value: name -> (neutral value, what to do instead).
_NEUTRAL_ONLY: dict[str, tuple[object, str]] = {
    "presence_penalty": (0, "not supported; use 0 or leave it out"),
    "frequency_penalty": (0, "not supported; use 0 or leave it out"),
    "repetition_penalty": (1, "not supported; use 1 or leave it out"),
    "min_p": (0, "not supported; use 0 or leave it out"),
    "skip_special_tokens": (True, "only true is supported (special tokens are never shown)"),
    "spaces_between_special_tokens": (True, "only true is supported"),
    "include_stop_str_in_output": (False, "only false is supported (the stop string is cut)"),
}


class Endpoint(StrEnum):
    """Which OpenAI endpoint a request came through (shapes the response)."""

    COMPLETIONS = "completions"
    CHAT = "chat"


@dataclass(frozen=True)
class GenerationRequest:
    """One validated request, as the worker runs it."""

    endpoint: Endpoint
    prompt_ids: tuple[int, ...]  # the tokens to prefill
    params: SamplingParams  # max_tokens already resolved against the context limit
    stream: bool
    include_usage: bool  # stream_options.include_usage: a last chunk with usage
    logprobs: bool  # report each generated token's logprob
    top_logprobs: int  # alternatives per token (0: none)
    echo: bool  # completions: the prompt is part of the returned text (and its logprobs)
    prompt_text: str = ""  # completions with echo: the prompt as text (decoded when given as ids)
    continuous_usage: bool = False  # stream_options.continuous_usage_stats: usage on every chunk


def check_model(name: str, limits: Limits) -> None:
    """404 unless `name` is the served model."""
    if name != limits.served_model_name:
        raise ApiError(
            404,
            f"model {name!r}: not served here; this server serves {limits.served_model_name!r}",
            param="model",
            code="model_not_found",
        )


def from_completion(body: CompletionRequest, tokenizer: Any, limits: Limits) -> GenerationRequest:
    """Validate a /v1/completions body and tokenize its prompt."""
    check_model(body.model, limits)
    _check_unsupported(body, limits)
    if body.best_of not in (None, 1):
        raise bad_request(f"best_of {body.best_of}: only 1 is supported", param="best_of")
    if body.suffix is not None:
        raise bad_request("suffix: not supported by this server; leave it out", param="suffix")
    if body.max_tokens == 0 and not body.echo:
        raise bad_request("max_tokens 0: allowed only with echo=true (to score the prompt)", "max_tokens")
    top = body.logprobs or 0
    if body.stream and (top > 0 or (body.echo and body.logprobs is not None)):
        raise bad_request(_NO_STREAM_SCORING.format(f"logprobs {top}, echo {body.echo}"), "logprobs")
    prompt_ids = completion_prompt(body.prompt, tokenizer, limits, body.add_special_tokens)
    max_tokens = _resolve_max_tokens(body.max_tokens, len(prompt_ids), limits, "prompt")
    return GenerationRequest(
        endpoint=Endpoint.COMPLETIONS,
        prompt_ids=prompt_ids,
        params=_sampling(body, max_tokens, limits),
        stream=body.stream,
        include_usage=_include_usage(body),
        logprobs=body.logprobs is not None,
        top_logprobs=top,
        echo=body.echo,
        prompt_text=prompt_text(body.prompt, prompt_ids, tokenizer) if body.echo else "",
        continuous_usage=_continuous_usage(body),
    )


def from_chat(body: ChatCompletionRequest, tokenizer: Any, limits: Limits) -> GenerationRequest:
    """Validate a /v1/chat/completions body and render its messages with the chat template."""
    check_model(body.model, limits)
    _check_unsupported(body, limits)
    if body.tools or body.tool_choice is not None:
        raise bad_request("tools / tool_choice: tool calling is not supported by this server", "tools")
    if body.response_format is not None and body.response_format.get("type") != "text":
        raise bad_request(
            f"response_format {_short(body.response_format)}: only type text", "response_format"
        )
    if body.top_logprobs and not body.logprobs:
        raise bad_request("top_logprobs: requires logprobs=true", param="top_logprobs")
    if body.stream and body.top_logprobs:
        raise bad_request(_NO_STREAM_SCORING.format(f"top_logprobs {body.top_logprobs}"), "top_logprobs")
    prompt_ids = chat_prompt(body, tokenizer, limits)
    requested = body.max_completion_tokens or body.max_tokens
    max_tokens = _resolve_max_tokens(requested, len(prompt_ids), limits, "messages")
    return GenerationRequest(
        endpoint=Endpoint.CHAT,
        prompt_ids=prompt_ids,
        params=_sampling(body, max_tokens, limits),
        stream=body.stream,
        include_usage=_include_usage(body),
        logprobs=body.logprobs,
        top_logprobs=body.top_logprobs or 0,
        echo=False,
        continuous_usage=_continuous_usage(body),
    )


def _check_unsupported(body: _SamplingFields, limits: Limits) -> None:
    if body.n != 1:
        raise bad_request(f"n {body.n}: only n=1 is supported; send several requests instead", "n")
    for name, (neutral, advice) in _NEUTRAL_ONLY.items():
        value = getattr(body, name)
        if value != neutral:
            raise bad_request(f"{name} {_short(value)}: {advice}", name)
    if body.logit_bias:
        raise bad_request("logit_bias: not supported by this server; leave it out", "logit_bias")
    if body.stream_options is not None and not body.stream:
        raise bad_request("stream_options: only allowed with stream=true", "stream_options")
    outside = [t for t in body.stop_token_ids or () if t >= limits.vocab_size]
    if outside:
        raise bad_request(
            f"stop_token_ids: token id {outside[0]} outside the vocabulary [0, {limits.vocab_size})",
            "stop_token_ids",
        )


def _include_usage(body: _SamplingFields) -> bool:
    return body.stream_options is not None and body.stream_options.include_usage


def _continuous_usage(body: _SamplingFields) -> bool:
    return body.stream_options is not None and body.stream_options.continuous_usage_stats


def _sampling(body: _SamplingFields, max_tokens: int, limits: Limits) -> SamplingParams:
    stop = (body.stop,) if isinstance(body.stop, str) else tuple(body.stop or ())
    stop_ids = tuple(body.stop_token_ids or ())
    suppressed = tuple(sorted(set(stop_ids) | (set() if body.ignore_eos else set(limits.eos_token_ids))))
    try:
        return SamplingParams(
            max_tokens=max_tokens,
            temperature=body.temperature,
            top_k=body.top_k if 0 < body.top_k < limits.vocab_size else 0,  # the whole vocabulary: off
            top_p=body.top_p,
            seed=body.seed,
            stop=stop,
            stop_token_ids=stop_ids,
            ignore_eos=body.ignore_eos,
            min_tokens=min(body.min_tokens, max_tokens),
            suppressed=suppressed if body.min_tokens else (),
        )
    except UserError as exc:
        raise bad_request(str(exc), param=str(exc).split(" ", 1)[0]) from None


def _resolve_max_tokens(requested: int | None, prompt_len: int, limits: Limits, prompt_param: str) -> int:
    """The completion budget; 400 (context_length_exceeded) when prompt + budget exceed the context."""
    room = limits.context - prompt_len
    if room < 0 or (requested is not None and requested > room):
        asked = "" if requested is None else f" + max_tokens {requested}"
        raise bad_request(
            f"{prompt_param}: {prompt_len} prompt tokens{asked} exceed the context length of "
            f"{limits.context} tokens; shorten the prompt or lower max_tokens",
            param=prompt_param,
            code="context_length_exceeded",
        )
    return room if requested is None else requested


def _short(value: object, limit: int = 80) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
