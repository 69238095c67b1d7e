"""One request's work in a worker thread, reported to the event loop as a queue of events.

The thread reserves the request's KV slot (admission by KV memory, batch_loop.BatchLoop.reserve),
routes the prefill (remote: the KV lands in the slot; local: the engine loop prefills it in chunks),
submits the sequence to the worker's one engine loop, which decodes it together with the others and
emits one Token event per step, and waits until the sequence left the batch; then it optionally
scores the tokens for logprobs. A cancelled request leaves the batch at the loop's next iteration;
when the thread ends, the slot is released and `on_exit` runs on the event loop (the scheduler slot
is released there). Exceptions end this request only.
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
from hybrid_workers.decode.batch_loop import BatchLoop
from hybrid_workers.decode.engine_api import KVSlot
from hybrid_workers.decode.kv_budget import ReservationCancelled
from hybrid_workers.decode.logprobs import TokenScore
from hybrid_workers.decode.requests import GenerationRequest
from hybrid_workers.decode.routing import PrefillPlan, PrefillRouter
from hybrid_workers.decode.sequence import SequenceRun
from hybrid_workers.engine.generation import TextStep
from hybrid_workers.engine.loading import LoadedModel
from hybrid_workers.kv.errors import PrefillCancelled
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

    The engine loop holds it for each batched step or prefill chunk; a logprobs scoring pass takes
    it between two steps. One forward pass already uses every core, so nothing is lost by waiting.
    """
    own = getattr(lm, "lock", None)  # the MLX engine's model carries its lock (it also guards KV commits)
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
        engine_loop: BatchLoop,
        request: GenerationRequest,
        loop: asyncio.AbstractEventLoop,
        on_exit: Callable[[], None],
    ) -> None:
        self.lm, self.router, self.engine_loop, self.request = lm, router, engine_loop, request
        self.cancelled = threading.Event()
        self._loop = loop
        self._on_exit = on_exit
        self._events: asyncio.Queue[Event] = asyncio.Queue()

    def cancel(self) -> None:
        """Ask for the sequence to leave the batch before its next token, or its remote prefill to
        stop now (safe from any thread)."""
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
        try:
            slot = self.engine_loop.reserve(
                len(request.prompt_ids), request.params.max_tokens, self.cancelled
            )
        except ReservationCancelled:
            return None
        try:
            sequence = self._decode(slot)
        except PrefillCancelled:  # the client left during the remote prefill: not a failure
            return None
        finally:
            self.engine_loop.release(slot)  # idempotent: the loop released it when the sequence left
        if sequence.error is not None:
            raise sequence.error
        return sequence.generated if sequence.finished else None

    def _decode(self, slot: KVSlot) -> SequenceRun:
        """Prefill into `slot`, run the sequence in the engine loop, return it once it left the batch."""
        request = self.request
        plan = self.router.plan(request.prompt_ids, request.params, slot=slot, cancel=self.cancelled)
        self._emit(Prefilled(plan))
        sequence = SequenceRun(
            request.prompt_ids,
            request.params,
            slot,
            self.lm.tokenizer,
            self.lm.eos_token_ids,
            self.lm.max_context,
            on_token=lambda step: self._emit(Token(step, time.perf_counter())),
            cancelled=self.cancelled,
        )
        remote = plan.remote
        first = (remote.first_token, remote.first_logprob) if remote is not None else None
        self.engine_loop.submit(sequence, first)
        sequence.done.wait()
        return sequence

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
