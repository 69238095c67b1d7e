"""One request's model work in a worker thread, reported to the event loop as a queue of events.

The thread routes the prefill (remote or local), generates tokens with the engine's
`stream_completion`, optionally scores the tokens for logprobs, and emits one event per step. It
checks its cancel flag between tokens, so a client that goes away stops the work within one token;
when the thread ends, whatever it held (the KV cache included) is dropped and `on_exit` runs on the
event loop (the scheduler slot is released there). Exceptions end this request only.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from hybrid_workers.decode import engines
from hybrid_workers.decode.logprobs import TokenScore
from hybrid_workers.decode.requests import GenerationRequest
from hybrid_workers.decode.routing import PrefillPlan, PrefillRouter
from hybrid_workers.engine.generation import TextStep, stream_completion
from hybrid_workers.engine.loading import LoadedModel
from hybrid_workers.metrics import PrefillSite


@dataclass(frozen=True)
class Prefilled:
    """The prompt's KV cache exists (remote or local); the first token follows."""

    plan: PrefillPlan


@dataclass(frozen=True)
class Token:
    """One generated token with its text delta; the last one carries a finish reason."""

    step: TextStep
    produced_at: float  # time.perf_counter() when the model produced it (in the worker thread)


@dataclass(frozen=True)
class Finished:
    """Generation is over; `scores` covers prompt + completion when logprobs needed a scoring pass."""

    scores: list[TokenScore] | None


@dataclass(frozen=True)
class Failed:
    """The request failed with `error` (no more events follow)."""

    error: Exception


Event = Prefilled | Token | Finished | Failed


_LOCKS: weakref.WeakKeyDictionary[Any, threading.Lock] = weakref.WeakKeyDictionary()
_LOCKS_GUARD = threading.Lock()


def model_lock(lm: LoadedModel) -> threading.Lock:
    """The lock that serialises forward passes on one model object (one per model, process-wide).

    Concurrent requests interleave token by token instead of running forward passes at the same
    time. On a CPU this costs nothing (one forward pass already uses every core), and it keeps the
    engine's per-prefill layer hooks safe: torch registers and removes a module hook in two steps,
    so another thread's forward pass in between can call a kwargs hook without its kwargs.
    Batched decode (see scheduler.py) replaces this with one engine loop owning the model.
    """
    own = getattr(lm, "lock", None)  # the MLX engine's model carries its lock (it also guards KV writes)
    if own is not None:
        return own  # type: ignore[no-any-return]
    with _LOCKS_GUARD:
        return _LOCKS.setdefault(lm.model, threading.Lock())


def needs_scoring(request: GenerationRequest) -> bool:
    """True when the response reports logprobs the decode loop does not compute itself."""
    return request.top_logprobs > 0 or (request.echo and request.logprobs)


class RequestRun:
    """The model work of one request; `work()` runs in a worker thread, `next_event()` on the loop."""

    def __init__(
        self,
        lm: LoadedModel,
        router: PrefillRouter,
        request: GenerationRequest,
        loop: asyncio.AbstractEventLoop,
        on_exit: Callable[[], None],
    ) -> None:
        self.lm, self.router, self.request = lm, router, request
        self.cancelled = threading.Event()
        self._loop = loop
        self._on_exit = on_exit
        self._events: asyncio.Queue[Event] = asyncio.Queue()

    def cancel(self) -> None:
        """Ask the thread to stop before its next token (safe from any thread)."""
        self.cancelled.set()

    async def next_event(self) -> Event:
        """The next event from the thread (waits for it)."""
        return await self._events.get()

    def work(self) -> None:
        """Thread body: prefill, generate, score; every outcome becomes an event."""
        try:
            generated = self._generate()
            if generated is not None:
                scores = self._score(generated) if needs_scoring(self.request) else None
                self._emit(Finished(scores))
        except Exception as exc:  # reported to this request's client only
            self._emit(Failed(exc))
        finally:
            self._call_on_loop(self._on_exit)

    def _generate(self) -> list[int] | None:
        """Token ids generated, or None when cancelled."""
        request = self.request
        if request.params.max_tokens == 0:  # echo-only scoring: no prefill needed
            self._emit(Prefilled(PrefillPlan(PrefillSite.LOCAL, None)))
            return []
        plan = self.router.plan(request.prompt_ids, request.params)
        self._emit(Prefilled(plan))
        generated: list[int] = []
        tokens = engines.token_stream(self.lm, request.prompt_ids, request.params, plan.first)
        other_engine = {} if tokens is None else {"tokens": tokens}  # torch: the engine's own stream
        steps = stream_completion(
            self.lm, request.prompt_ids, request.params, first=plan.first, **other_engine
        )
        while not self.cancelled.is_set():
            with model_lock(self.lm):  # one forward pass (a local prefill or a decode step)
                step = next(steps, None)
            if step is None:
                return generated
            generated.append(step.token_id)
            self._emit(Token(step, time.perf_counter()))
        return None

    def _score(self, generated: list[int]) -> list[TokenScore] | None:
        if self.cancelled.is_set():
            return None
        with model_lock(self.lm):
            ids = [*self.request.prompt_ids, *generated]
            return engines.score_tokens(self.lm, ids, self.request.top_logprobs)  # type: ignore[no-any-return]

    def _emit(self, event: Event) -> None:
        self._call_on_loop(self._events.put_nowait, event)

    def _call_on_loop(self, function: Callable[..., object], *args: object) -> None:
        # A closed loop means the server is shutting down: nobody listens any more.
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(function, *args)
