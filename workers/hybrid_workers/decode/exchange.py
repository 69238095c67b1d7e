"""One request/response exchange: from the validated request to an OpenAI response or SSE stream.

The exchange starts the request's run, waits for its prefill so that failures before the first token
get a proper status code (503 for a failed remote prefill with --fallback fail), then either streams
tokens as they come or collects the whole answer. Whatever happens, the run is cancelled if the
client goes away (a non-streaming client is checked after every token) and the request is counted
exactly once with its outcome. A stream cut by a failure ends with an error event and [DONE].
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from hybrid_workers.decode.api_errors import ApiError
from hybrid_workers.decode.logprobs import TokenScore
from hybrid_workers.decode.requests import Endpoint, GenerationRequest
from hybrid_workers.decode.responses import DONE, ResponseShaper, sse, usage
from hybrid_workers.decode.routing import RemotePrefillFailed
from hybrid_workers.decode.runner import Failed, Finished, Prefilled, RequestRun, Token
from hybrid_workers.decode.stats import RequestStats
from hybrid_workers.decode.worker import ClientGone, DecodeWorker, IsDisconnected, wait_unless_disconnected
from hybrid_workers.engine.generation import TextStep
from hybrid_workers.errors import UserError
from hybrid_workers.metrics import RequestOutcome

# Status of an ApiError raised before the run started -> how the request is counted.
_OUTCOMES = {429: RequestOutcome.REJECTED, 503: RequestOutcome.UNAVAILABLE}


class Exchange:
    """Drives one request; `prepare()` first, then `stream()` or `collect()`."""

    def __init__(self, worker: DecodeWorker, request: GenerationRequest, stats: RequestStats) -> None:
        self.worker = worker
        self.request = request
        self.stats = stats
        self.shaper = ResponseShaper(
            request.endpoint, worker.config.served_model_name, worker.token_texts, request.top_logprobs
        )
        self.sent_chars = 0  # text sent so far (streaming): where the next token's text starts
        self.steps: list[TextStep] = []  # received so far
        self._run: RequestRun | None = None

    @property
    def run(self) -> RequestRun:
        """The started run (after prepare)."""
        assert self._run is not None, "prepare() first"
        return self._run

    async def prepare(self, is_disconnected: IsDisconnected) -> None:
        """Admit the request and wait for its prefill; raises ApiError / ClientGone (outcome counted)."""
        try:
            self.stats.queued()
            self._run = await self.worker.start(self.request, is_disconnected)
            self.stats.admitted(len(self.request.prompt_ids))
            event = await wait_unless_disconnected(
                asyncio.ensure_future(self.run.next_event()), is_disconnected
            )
        except ApiError as exc:
            self.stats.finish(_OUTCOMES.get(exc.status, RequestOutcome.INVALID))
            raise
        except (ClientGone, asyncio.CancelledError):
            self.abandon()
            raise
        if isinstance(event, Failed):
            raise self._fail(event.error)
        assert isinstance(event, Prefilled)
        plan = event.plan
        timings = plan.remote.timings if plan.remote is not None else None
        self.stats.prefilled(plan.site, timings, plan.fallback.value if plan.fallback else None)

    def abandon(self) -> None:
        """The client is gone: stop the run, count the request as cancelled."""
        if self._run is not None:
            self._run.cancel()
        self.stats.finish(RequestOutcome.CANCELLED)

    def _fail(self, error: Exception) -> ApiError:
        """Count the failure and turn it into the error the client gets."""
        if isinstance(error, RemotePrefillFailed):
            self.stats.fallback = error.reason.value  # the log line names why remote prefill failed
            self.stats.finish(RequestOutcome.UNAVAILABLE)
            return ApiError(503, str(error), type="server_error", code="prefill_unavailable")
        if isinstance(error, UserError):
            self.stats.finish(RequestOutcome.INVALID)
            return ApiError(400, str(error))
        self.stats.finish(RequestOutcome.ERROR)
        return ApiError(500, f"generation failed: {type(error).__name__}: {error}", type="server_error")

    # ---- non-streaming --------------------------------------------------------------------------
    async def collect(self, is_disconnected: IsDisconnected) -> dict[str, Any]:
        """The whole response body, once generation is over."""
        try:
            while True:
                waiting = asyncio.ensure_future(self.run.next_event())
                event = await wait_unless_disconnected(waiting, is_disconnected)
                if isinstance(event, Token):
                    self._take(event)
                    if await is_disconnected():  # noticed within one token, even while tokens flow
                        raise ClientGone()
                elif isinstance(event, Failed):
                    raise self._fail(event.error)
                elif isinstance(event, Finished):
                    # decoding every prompt token's text for echo logprobs is CPU work: off the loop
                    logprobs = await self.worker.in_thread(self._logprobs, event.scores)
                    return self._body(logprobs)
        except (ClientGone, asyncio.CancelledError):
            self.abandon()
            raise

    def _take(self, event: Token) -> None:
        self.steps.append(event.step)
        self.stats.token_sent(event.produced_at)

    def _body(self, logprobs: dict[str, Any] | None) -> dict[str, Any]:
        finish = self.steps[-1].finish_reason if self.steps else "length"
        self.stats.finish(RequestOutcome.SUCCESS, finish)
        return self.shaper.full(self._text(), finish, logprobs, self._usage())

    def _logprobs(self, scores: list[TokenScore] | None) -> dict[str, Any] | None:
        request = self.request
        if not request.logprobs:
            return None
        if scores is None:
            scores = [TokenScore(step.token_id, step.logprob, ()) for step in self.steps]
        elif not request.echo:
            scores = scores[len(request.prompt_ids) :]
        return self.shaper.logprobs(scores, self._text())

    def _text(self) -> str:
        """The returned text: (echoed prompt +) the generated text."""
        text = "".join(step.text for step in self.steps)
        return self.request.prompt_text + text if self.request.echo else text

    def _usage(self) -> dict[str, int]:
        return usage(len(self.request.prompt_ids), len(self.steps))

    # ---- streaming ------------------------------------------------------------------------------
    async def stream(self) -> AsyncIterator[str]:
        """SSE events: (role,) prompt echo, one chunk per token, (usage,) [DONE]."""
        try:
            async for event in self._stream_events():
                yield event
        finally:
            if not self.stats.finished:  # the client went away (the generator was closed / cancelled)
                self.abandon()

    async def _stream_events(self) -> AsyncIterator[str]:
        if self.request.endpoint is Endpoint.CHAT:
            yield sse(self.shaper.role_chunk())
        if self.request.echo:
            self.sent_chars = len(self.request.prompt_text)
            yield sse(self._with_usage(self.shaper.chunk(self.request.prompt_text)))
        while True:
            event = await self.run.next_event()
            if isinstance(event, Token):
                self._take(event)
                yield sse(self._with_usage(self._token_chunk(event)))
            elif isinstance(event, Failed):  # an error event, then [DONE]: the client sees the end
                yield sse(self._fail(event.error).body())
                yield DONE
                return
            elif isinstance(event, Finished):
                break
        finish = self.steps[-1].finish_reason if self.steps else "length"
        self.stats.finish(RequestOutcome.SUCCESS, finish)
        if not self.steps:  # echo with max_tokens 0: no token chunk carried the finish reason
            yield sse(self._with_usage(self.shaper.chunk("", finish)))
        if self.request.include_usage:
            yield sse(self.shaper.usage_chunk(self._usage()))
        yield DONE

    def _with_usage(self, chunk: dict[str, Any]) -> dict[str, Any]:
        """stream_options.continuous_usage_stats: every chunk carries the usage so far (as vLLM does)."""
        if self.request.continuous_usage:
            chunk["usage"] = self._usage()
        return chunk

    def _token_chunk(self, event: Token) -> dict[str, Any]:
        step = event.step
        logprobs = None
        if self.request.logprobs:
            score = TokenScore(step.token_id, step.logprob, ())
            logprobs = self.shaper.logprobs([score], step.text, self.sent_chars)
        self.sent_chars += len(step.text)
        return self.shaper.chunk(step.text, step.finish_reason, logprobs)
