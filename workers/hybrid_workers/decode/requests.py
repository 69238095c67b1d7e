"""HTTP request bodies -> `GenerationRequest`: tokenized prompt + SamplingParams, checked against limits.

Everything a client can get wrong is caught here and raised as an `ApiError` (4xx) naming the
parameter and its value, before any model work starts.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from hybrid_workers.decode.api_errors import ApiError, bad_request
from hybrid_workers.decode.schemas import ChatCompletionRequest, CompletionRequest, _SamplingFields
from hybrid_workers.engine.sampling import SamplingParams
from hybrid_workers.errors import UserError

_NO_STREAM_SCORING = (
    "{}: top logprob alternatives and prompt logprobs need a scoring pass after generation, "
    "so they are available with stream=false only (plain per-token logprobs stream fine)"
)


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


@dataclass(frozen=True)
class Limits:
    """What the served model accepts."""

    served_model_name: str
    context: int  # prompt + completion tokens
    vocab_size: int


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
    _check_unsupported(body)
    if body.best_of not in (None, 1):
        raise bad_request(f"best_of {body.best_of}: only 1 is supported", param="best_of")
    if body.suffix is not None:
        raise bad_request("suffix: not supported by this server; leave it out", param="suffix")
    prompt_ids = _completion_prompt(body.prompt, tokenizer, limits.vocab_size)
    if body.max_tokens == 0 and not body.echo:
        raise bad_request("max_tokens 0: allowed only with echo=true (to score the prompt)", "max_tokens")
    max_tokens = _resolve_max_tokens(body.max_tokens, len(prompt_ids), limits, "prompt")
    top = body.logprobs or 0
    if body.stream and (top > 0 or (body.echo and body.logprobs is not None)):
        raise bad_request(_NO_STREAM_SCORING.format(f"logprobs {top}, echo {body.echo}"), "logprobs")
    return GenerationRequest(
        endpoint=Endpoint.COMPLETIONS,
        prompt_ids=prompt_ids,
        params=_sampling(body, max_tokens),
        stream=body.stream,
        include_usage=_include_usage(body),
        logprobs=body.logprobs is not None,
        top_logprobs=top,
        echo=body.echo,
        prompt_text=_prompt_text(body.prompt, prompt_ids, tokenizer) if body.echo else "",
    )


def from_chat(body: ChatCompletionRequest, tokenizer: Any, limits: Limits) -> GenerationRequest:
    """Validate a /v1/chat/completions body and render its messages with the chat template."""
    check_model(body.model, limits)
    _check_unsupported(body)
    if body.tools or body.tool_choice is not None:
        raise bad_request("tools / tool_choice: tool calling is not supported by this server", "tools")
    if body.response_format is not None and body.response_format.get("type") != "text":
        raise bad_request(f"response_format {body.response_format!r}: only type text", "response_format")
    if body.top_logprobs and not body.logprobs:
        raise bad_request("top_logprobs: requires logprobs=true", param="top_logprobs")
    if body.stream and body.top_logprobs:
        raise bad_request(_NO_STREAM_SCORING.format(f"top_logprobs {body.top_logprobs}"), "top_logprobs")
    prompt_ids = _chat_prompt(body, tokenizer)
    requested = body.max_completion_tokens or body.max_tokens
    max_tokens = _resolve_max_tokens(requested, len(prompt_ids), limits, "messages")
    return GenerationRequest(
        endpoint=Endpoint.CHAT,
        prompt_ids=prompt_ids,
        params=_sampling(body, max_tokens),
        stream=body.stream,
        include_usage=_include_usage(body),
        logprobs=body.logprobs,
        top_logprobs=body.top_logprobs or 0,
        echo=False,
    )


def _check_unsupported(body: _SamplingFields) -> None:
    if body.n != 1:
        raise bad_request(f"n {body.n}: only n=1 is supported; send several requests instead", "n")
    for name in ("presence_penalty", "frequency_penalty"):
        if getattr(body, name) != 0:
            raise bad_request(f"{name} {getattr(body, name)}: not supported; use 0 or leave it out", name)
    if body.logit_bias:
        raise bad_request("logit_bias: not supported by this server; leave it out", "logit_bias")
    if body.stream_options is not None and not body.stream:
        raise bad_request("stream_options: only allowed with stream=true", "stream_options")


def _include_usage(body: _SamplingFields) -> bool:
    return body.stream_options is not None and body.stream_options.include_usage


def _sampling(body: _SamplingFields, max_tokens: int) -> SamplingParams:
    stop = (body.stop,) if isinstance(body.stop, str) else tuple(body.stop or ())
    try:
        return SamplingParams(
            max_tokens=max_tokens,
            temperature=body.temperature,
            top_k=max(body.top_k, 0),
            top_p=body.top_p,
            seed=body.seed,
            stop=stop,
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


def _completion_prompt(prompt: Any, tokenizer: Any, vocab_size: int) -> tuple[int, ...]:
    """A prompt given as text, [text], token ids or [token ids] -> token ids (one prompt only)."""
    if isinstance(prompt, list) and prompt and isinstance(prompt[0], str | list):
        if len(prompt) != 1:
            raise bad_request(f"prompt: {len(prompt)} prompts given; send one per request", "prompt")
        prompt = prompt[0]
    if isinstance(prompt, str):
        if not prompt:
            raise bad_request("prompt: must not be empty", param="prompt")
        return tuple(tokenizer(prompt, add_special_tokens=True)["input_ids"])
    if not prompt:
        raise bad_request("prompt: must not be empty", param="prompt")
    bad = [t for t in prompt if not 0 <= t < vocab_size]
    if bad:
        raise bad_request(f"prompt: token id {bad[0]} outside the vocabulary [0, {vocab_size})", "prompt")
    return tuple(prompt)


def _prompt_text(prompt: Any, prompt_ids: tuple[int, ...], tokenizer: Any) -> str:
    if isinstance(prompt, list) and prompt and isinstance(prompt[0], str):
        prompt = prompt[0]
    if isinstance(prompt, str):
        return prompt
    return str(tokenizer.decode(list(prompt_ids), skip_special_tokens=True))


def _chat_prompt(body: ChatCompletionRequest, tokenizer: Any) -> tuple[int, ...]:
    if not getattr(tokenizer, "chat_template", None):
        raise bad_request("this model's tokenizer has no chat template; use /v1/completions", "messages")
    messages = [{"role": m.role, "content": _text_of(m.content)} for m in body.messages]
    try:
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    except Exception as exc:  # a template may raise anything (jinja errors, its own raise_exception)
        raise bad_request(f"messages: the chat template refused them: {exc}", param="messages") from None
    return tuple(tokenizer(text, add_special_tokens=False)["input_ids"])


def _text_of(content: Any) -> str:
    return content if isinstance(content, str) else "".join(part.text for part in content)
