"""The decode worker's one engine loop: every iteration, one forward pass for all running sequences.

Request threads reserve a KV slot (`reserve`, admission by KV memory), have the prompt's KV land in
it (remote prefill) or not (local), and `submit` the sequence. The loop thread then, per iteration:

1. takes the sequences that arrived: those with a complete slot join the batch at once (their first
   token came with the remote prefill); the others queue for local prefill (FIFO);
2. drops cancelled sequences (their slot and KV bytes are released at once);
3. runs ONE decode step for all running sequences, samples each with its own parameters and seed,
   hands each its token; finished ones leave the batch in the same iteration;
4. runs at most ONE chunk (`prefill_chunk_tokens` positions) of the head local prefill; the chunk
   that ends a prompt samples its first token and the sequence joins the next step.

So a running stream waits at most one decode step plus one prefill chunk between two tokens (the
ITL bound), and a new sequence joins within one iteration of its KV being complete. A forward pass
that raises is retried one sequence at a time, so a failing sequence fails alone.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

from hybrid_workers.decode.engine_api import DecodeEngine, KVSlot
from hybrid_workers.decode.kv_budget import KVBudget
from hybrid_workers.decode.sequence import SequenceRun

log = logging.getLogger("hybrid_inference.decode")

DEFAULT_PREFILL_CHUNK_TOKENS = 256


class LoopClosed(Exception):
    """The engine loop stopped (the server is shutting down)."""


@dataclass(frozen=True)
class LoopEvent:
    """What one iteration did (for listeners: tests, traces). kind: step | prefill | leave."""

    kind: str
    batch: int  # sequences in the step (step), or running after the change (leave)
    start: int = 0  # prefill: first prompt position of the chunk
    tokens: int = 0  # prefill: positions in the chunk


class BatchLoop:
    """Owns the engine's forward passes for one decode worker (a daemon thread)."""

    def __init__(
        self,
        engine: DecodeEngine,
        budget: KVBudget,
        model_lock: threading.Lock,
        prefill_chunk_tokens: int = DEFAULT_PREFILL_CHUNK_TOKENS,
        observe: Callable[[int], None] | None = None,
    ) -> None:
        """`observe(batch_size)` is called whenever the number of running sequences changes."""
        self.engine, self.budget, self._lock = engine, budget, model_lock
        self.prefill_chunk_tokens = prefill_chunk_tokens
        self.listeners: list[Callable[[LoopEvent], None]] = []
        self._observe = observe or (lambda size: None)
        self._inbox: deque[tuple[SequenceRun, tuple[int, float] | None]] = deque()
        self._running: list[SequenceRun] = []
        self._prefilling: deque[SequenceRun] = deque()
        self._reserved: dict[int, int] = {}  # id(slot) -> bytes reserved for it
        self._reserved_lock = threading.Lock()
        self._wake = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="engine-loop", daemon=True)
        self._thread.start()

    @property
    def sequences(self) -> int:
        """Sequences submitted that have not left yet (arrived, prefilling or running); approximate
        while the loop thread is between two of its steps."""
        with self._wake:
            return len(self._inbox) + len(self._prefilling) + len(self._running)

    # ---- request threads -------------------------------------------------------------------------
    def reserve(self, prompt_len: int, max_tokens: int, cancelled: threading.Event) -> KVSlot:
        """A KV slot for prompt + max_tokens positions, once the budget has room (FIFO; blocks).

        Raises UserError when it can never fit, kv_budget.ReservationCancelled when cancelled.
        """
        nbytes = self.engine.kv_bytes_per_token * (prompt_len + max(1, max_tokens))
        self.budget.reserve(nbytes, cancelled)
        try:
            slot = self.engine.new_slot(prompt_len, max_tokens)
        except BaseException:
            self.budget.release(nbytes)
            raise
        with self._reserved_lock:
            self._reserved[id(slot)] = nbytes
        return slot

    def release(self, slot: KVSlot) -> None:
        """Free the slot's storage and give its bytes back (idempotent)."""
        with self._reserved_lock:
            nbytes = self._reserved.pop(id(slot), None)
        slot.release()
        if nbytes is not None:
            self.budget.release(nbytes)

    def submit(self, sequence: SequenceRun, first: tuple[int, float] | None) -> None:
        """Hand a sequence to the loop: `first` (token, logprob) when its slot is complete, else None."""
        with self._wake:
            if self._closed:
                raise LoopClosed("the decode worker is shutting down")
            self._inbox.append((sequence, first))
            self._wake.notify()

    def close(self, timeout_s: float = 30.0) -> None:
        """Stop after the current iteration and wait for the loop thread to end (at most `timeout_s`);
        sequences still running end with LoopClosed."""
        with self._wake:
            self._closed = True
            self._wake.notify()
        if threading.current_thread() is not self._thread:
            self._thread.join(timeout_s)

    # ---- the loop thread -------------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            with self._wake:
                while not (self._closed or self._inbox or self._running or self._prefilling):
                    self._wake.wait()
                if self._closed:
                    break
                arrivals = list(self._inbox)
                self._inbox.clear()
            for sequence, first in arrivals:
                self._arrive(sequence, first)
            self._drop_cancelled()
            if self._running:
                self._decode_step()
            if self._prefilling:
                self._prefill_chunk()
        self._shut_down()

    def _arrive(self, sequence: SequenceRun, first: tuple[int, float] | None) -> None:
        if first is None:
            self._prefilling.append(sequence)
            return
        self._running.append(sequence)
        self._observe(len(self._running))
        self._take(sequence, *first)

    def _drop_cancelled(self) -> None:
        for sequence in [s for s in self._prefilling if s.cancelled.is_set()]:
            self._prefilling.remove(sequence)
            self._leave(sequence)
        for sequence in [s for s in self._running if s.cancelled.is_set()]:
            self._leave(sequence)

    def _decode_step(self) -> None:
        batch = list(self._running)
        entries = [(s.slot, s.generated[-1], s.position) for s in batch]
        try:
            with self._lock:
                rows = self.engine.step(entries)
        except Exception:  # find who fails: each sequence alone (positions are rewritten, no harm done)
            rows = [self._step_alone(s) for s in batch]
        self._notify(LoopEvent("step", len(batch)))
        for sequence, row in zip(batch, rows, strict=True):
            if row is not None:
                self._sample(sequence, row)

    def _step_alone(self, sequence: SequenceRun) -> object | None:
        try:
            with self._lock:
                return self.engine.step([(sequence.slot, sequence.generated[-1], sequence.position)])[0]
        except Exception as exc:
            self._fail(sequence, exc)
            return None

    def _prefill_chunk(self) -> None:
        sequence = self._prefilling[0]
        start = sequence.prefilled
        chunk = sequence.prompt_ids[start : start + self.prefill_chunk_tokens]
        try:
            with self._lock:
                row = self.engine.prefill_chunk(sequence.slot, chunk, start)
        except Exception as exc:
            self._prefilling.popleft()
            self._fail(sequence, exc)
            return
        sequence.prefilled += len(chunk)
        self._notify(LoopEvent("prefill", len(self._running), start, len(chunk)))
        if row is not None:
            self._prefilling.popleft()
            self._running.append(sequence)
            self._observe(len(self._running))
            self._sample(sequence, row)

    def _sample(self, sequence: SequenceRun, row: object) -> None:
        try:
            token, logprob = self.engine.sample(row, sequence.params, sequence.step)
        except Exception as exc:
            self._fail(sequence, exc)
            return
        self._take(sequence, token, logprob)

    def _take(self, sequence: SequenceRun, token: int, logprob: float) -> None:
        try:
            sequence.take(token, logprob)
        except Exception as exc:
            self._fail(sequence, exc)
            return
        if sequence.finished:
            self._leave(sequence)

    def _fail(self, sequence: SequenceRun, error: Exception) -> None:
        log.warning("sequence failed alone, its batch-mates go on: %s: %s", type(error).__name__, error)
        sequence.error = error
        self._leave(sequence)

    def _leave(self, sequence: SequenceRun) -> None:
        if sequence in self._running:
            self._running.remove(sequence)
            self._observe(len(self._running))
        self.release(sequence.slot)
        sequence.done.set()
        self._notify(LoopEvent("leave", len(self._running)))

    def _notify(self, event: LoopEvent) -> None:
        for listener in list(self.listeners):
            listener(event)

    def _shut_down(self) -> None:
        with self._wake:
            arrivals = [sequence for sequence, _ in self._inbox]
            self._inbox.clear()
        for sequence in [*self._running, *self._prefilling, *arrivals]:
            self._fail(sequence, LoopClosed("the decode worker is shutting down"))
        self._prefilling.clear()
