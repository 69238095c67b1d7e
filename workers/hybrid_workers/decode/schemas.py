"""Pydantic models of the HTTP request bodies (OpenAI completions and chat); used at the edge only.

Types are strict (a string is not a number) and unknown fields are refused, so a typo in a parameter
name is a 400 naming the field instead of a silently ignored setting. Parameters OpenAI defines but
this server does not implement are accepted only at their neutral value (e.g. `presence_penalty: 0`).
vLLM's extensions that real tools send (guidellm: `ignore_eos`, `stream_options.continuous_usage_stats`)
are honoured; the ones that cannot be are accepted at their neutral value only, as above.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from hybrid_workers.engine.sampling import SEED_LIMIT

MAX_STOP_SEQUENCES = 16
MAX_STOP_CHARS = 512  # one stop string; each generated token is checked against every stop string
MAX_STOP_TOKEN_IDS = 64
MAX_TOP_LOGPROBS_COMPLETIONS = 5  # OpenAI's limit for the legacy completions endpoint
MAX_TOP_LOGPROBS_CHAT = 20  # OpenAI's limit for chat

Temperature = Annotated[float, Field(ge=0.0, le=2.0)]
TopP = Annotated[float, Field(gt=0.0, le=1.0)]
Penalty = Annotated[float, Field(ge=-2.0, le=2.0)]
StopItem = Annotated[str, Field(min_length=1, max_length=MAX_STOP_CHARS)]
Stop = StopItem | Annotated[list[StopItem], Field(max_length=MAX_STOP_SEQUENCES)] | None
# A prompt: text, one text in a list, token ids, or one list of token ids (what lm-eval sends).
Prompt = str | list[str] | list[int] | list[list[int]]


class _Strict(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid")


class StreamOptions(_Strict):
    """`stream_options`: with include_usage, one last chunk carries the usage counts."""

    include_usage: bool = False
    continuous_usage_stats: bool = False  # extension (vLLM's): every chunk carries the usage so far


class _SamplingFields(_Strict):
    """Fields both endpoints share."""

    model: str
    temperature: Temperature = 1.0  # 0: greedy
    top_p: TopP = 1.0
    top_k: Annotated[int, Field(ge=-1)] = 0  # extension (vLLM's): 0 or -1 = off; >= vocabulary: off
    seed: Annotated[int, Field(ge=0, lt=SEED_LIMIT)] | None = None  # same seed, same request -> same output
    stop: Stop = None
    n: int = 1  # only 1 is supported (checked with a clear message, see requests.py)
    stream: bool = False
    stream_options: StreamOptions | None = None
    presence_penalty: Penalty = 0.0  # accepted only as 0
    frequency_penalty: Penalty = 0.0  # accepted only as 0
    logit_bias: dict[str, float] | None = None  # accepted only empty
    user: str | None = None  # ignored, as OpenAI allows
    # vLLM's extensions (docs/api.md says what each does)
    ignore_eos: bool = False
    min_tokens: Annotated[int, Field(ge=0)] = 0
    stop_token_ids: (
        Annotated[list[Annotated[int, Field(ge=0)]], Field(max_length=MAX_STOP_TOKEN_IDS)] | None
    ) = None
    skip_special_tokens: bool = True  # accepted only as true
    spaces_between_special_tokens: bool = True  # accepted only as true
    include_stop_str_in_output: bool = False  # accepted only as false
    repetition_penalty: float = 1.0  # accepted only as 1
    min_p: float = 0.0  # accepted only as 0


class CompletionRequest(_SamplingFields):
    """POST /v1/completions."""

    prompt: Prompt
    max_tokens: Annotated[int, Field(ge=0)] | None = 16  # OpenAI's default; 0 with echo scores the prompt
    logprobs: Annotated[int, Field(ge=0, le=MAX_TOP_LOGPROBS_COMPLETIONS)] | None = None
    echo: bool = False  # prepend the prompt to the text (and its logprobs when asked)
    best_of: int | None = None  # accepted only as 1
    suffix: str | None = None  # not supported (refused when given)
    add_special_tokens: bool = True  # extension (vLLM's): BOS etc. around a text prompt


class TextPart(_Strict):
    """One part of a multi-part message content; only text is supported."""

    type: Literal["text"]
    text: str


class ChatMessage(_Strict):
    """One message of a chat conversation."""

    role: Literal["system", "developer", "user", "assistant"]
    content: str | list[TextPart]
    name: str | None = None


class ChatCompletionRequest(_SamplingFields):
    """POST /v1/chat/completions."""

    messages: Annotated[list[ChatMessage], Field(min_length=1)]
    max_tokens: Annotated[int, Field(ge=1)] | None = None  # None: up to the context limit
    max_completion_tokens: Annotated[int, Field(ge=1)] | None = None  # newer name; wins over max_tokens
    logprobs: bool = False
    top_logprobs: Annotated[int, Field(ge=0, le=MAX_TOP_LOGPROBS_CHAT)] | None = None
    response_format: dict[str, Any] | None = None  # accepted only as {"type": "text"}
    tools: list[Any] | None = None  # not supported (refused when given)
    tool_choice: Any = None  # not supported (refused when given)
    # vLLM's extensions: the template's own special tokens are in its text, so none are added by default
    add_special_tokens: bool = False
    add_generation_prompt: bool = True
    continue_final_message: bool = False
