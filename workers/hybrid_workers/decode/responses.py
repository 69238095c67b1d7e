"""OpenAI response shapes: whole responses and SSE chunks for completions and chat completions."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from hybrid_workers.decode.logprobs import TokenScore
from hybrid_workers.decode.requests import Endpoint
from hybrid_workers.decode.token_texts import TokenTexts

DONE = "data: [DONE]\n\n"


def sse(payload: dict[str, Any]) -> str:
    """One server-sent event carrying `payload` as JSON."""
    return f"data: {json.dumps(payload, ensure_ascii=False)}\n\n"


def usage(prompt_tokens: int, completion_tokens: int) -> dict[str, int]:
    """OpenAI's usage object."""
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion_tokens,
        "total_tokens": prompt_tokens + completion_tokens,
    }


@dataclass
class ResponseShaper:
    """Builds the bodies of one request's response (ids and creation time fixed per request)."""

    endpoint: Endpoint
    model: str
    texts: TokenTexts  # token names, bytes and offsets
    top_logprobs: int = 0  # alternatives per token in logprobs objects
    id: str = field(default_factory=lambda: uuid.uuid4().hex[:24])
    created: int = field(default_factory=lambda: int(time.time()))

    @property
    def response_id(self) -> str:
        """`cmpl-…` or `chatcmpl-…`, as OpenAI names them."""
        return ("cmpl-" if self.endpoint is Endpoint.COMPLETIONS else "chatcmpl-") + self.id

    def _envelope(self, kind: str, choices: list[dict[str, Any]]) -> dict[str, Any]:
        return {
            "id": self.response_id,
            "object": kind,
            "created": self.created,
            "model": self.model,
            "choices": choices,
        }

    def full(
        self, text: str, finish_reason: str | None, logprobs: dict[str, Any] | None, counts: dict[str, int]
    ) -> dict[str, Any]:
        """A non-streaming response."""
        if self.endpoint is Endpoint.COMPLETIONS:
            choice = {"index": 0, "text": text, "logprobs": logprobs, "finish_reason": finish_reason}
            body = self._envelope("text_completion", [choice])
        else:
            message = {"role": "assistant", "content": text}
            choice = {"index": 0, "message": message, "logprobs": logprobs, "finish_reason": finish_reason}
            body = self._envelope("chat.completion", [choice])
        body["usage"] = counts
        return body

    def chunk(
        self, text: str, finish_reason: str | None = None, logprobs: dict[str, Any] | None = None
    ) -> dict[str, Any]:
        """A streaming chunk carrying a text delta (and the finish reason on the last one)."""
        if self.endpoint is Endpoint.COMPLETIONS:
            choice = {"index": 0, "text": text, "logprobs": logprobs, "finish_reason": finish_reason}
            return self._envelope("text_completion", [choice])
        delta = {"content": text} if text or finish_reason is None else {}
        choice = {"index": 0, "delta": delta, "logprobs": logprobs, "finish_reason": finish_reason}
        return self._envelope("chat.completion.chunk", [choice])

    def role_chunk(self) -> dict[str, Any]:
        """Chat streams open with the assistant role and empty content."""
        delta = {"role": "assistant", "content": ""}
        return self._envelope("chat.completion.chunk", [{"index": 0, "delta": delta, "finish_reason": None}])

    def usage_chunk(self, counts: dict[str, int]) -> dict[str, Any]:
        """The last chunk with stream_options.include_usage: no choices, just usage."""
        kind = "text_completion" if self.endpoint is Endpoint.COMPLETIONS else "chat.completion.chunk"
        body = self._envelope(kind, [])
        body["usage"] = counts
        return body

    def logprobs(self, scores: Sequence[TokenScore], text: str = "", offset: int = 0) -> dict[str, Any]:
        """The logprobs object of `scores` in this endpoint's shape; completions' `text_offset` places
        each token in `text` (the returned text), the first at `offset`."""
        if self.endpoint is Endpoint.COMPLETIONS:
            return self._completion_logprobs(scores, text, offset)
        return {"content": [self._chat_entry(score) for score in scores]}

    def _completion_logprobs(self, scores: Sequence[TokenScore], text: str, offset: int) -> dict[str, Any]:
        ids = [s.token_id for s in scores]
        return {
            "tokens": [self.texts.label(i) for i in ids],
            "token_logprobs": [s.logprob for s in scores],
            "top_logprobs": [self._top_dict(s) for s in scores],
            "text_offset": self.texts.offsets(ids, text, offset),
        }

    def _top_dict(self, score: TokenScore) -> dict[str, float] | None:
        """Alternatives as {token: logprob}, always including the token itself (as vLLM does)."""
        if score.logprob is None:
            return None
        pairs = [*score.top[: self.top_logprobs]]
        if all(i != score.token_id for i, _ in pairs):
            pairs.append((score.token_id, score.logprob))
        return self.texts.top_dict(pairs)

    def _chat_entry(self, score: TokenScore) -> dict[str, Any]:
        alternatives = [self._chat_alternative(i, lp) for i, lp in score.top[: self.top_logprobs]]
        return {**self._chat_alternative(score.token_id, score.logprob or 0.0), "top_logprobs": alternatives}

    def _chat_alternative(self, token_id: int, logprob: float) -> dict[str, Any]:
        return {
            "token": self.texts.label(token_id),
            "logprob": logprob,
            "bytes": list(self.texts.token_bytes(token_id)),
        }
