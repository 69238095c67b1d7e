"""Admission control: at most N requests run at once, up to M wait in FIFO order, the rest get 429.

Runs on the event loop (no locks: every method is called from the loop's thread). A request calls
`await acquire()` to get a `Slot`; it holds the slot while its model work runs in a worker thread and
releases it when that work has really stopped (finished, failed or cancelled), so `running` always
equals the number of KV caches alive. A waiter that is cancelled (its client went away) leaves the
queue without taking a slot.

With batched decode, slots = the largest batch: every request holding a slot is (or is about to
be) one sequence of the engine loop's batch (decode/batch_loop.py), which runs one forward pass per
step for all of them; KV memory is a second, finer gate inside (decode/kv_budget.py). The queue and
the 429 are unchanged.
"""

from __future__ import annotations

import asyncio
import math
from collections import deque
from collections.abc import Callable

# Weight of the newest slot-hold duration in the running average used for Retry-After.
_EMA_WEIGHT = 0.2
_MAX_RETRY_AFTER_S = 60


class QueueFull(Exception):
    """The waiting queue is full; retry after `retry_after_s` seconds."""

    def __init__(self, waiting: int, retry_after_s: int) -> None:
        super().__init__(f"server busy: {waiting} requests already waiting; retry in {retry_after_s} s")
        self.retry_after_s = retry_after_s


class Slot:
    """A held place among the running requests; `release()` is idempotent."""

    def __init__(self, scheduler: Scheduler, loop: asyncio.AbstractEventLoop) -> None:
        self._scheduler = scheduler
        self._started = loop.time()
        self._released = False

    def release(self) -> None:
        """Give the place to the next waiter (call from the event loop)."""
        if not self._released:
            self._released = True
            self._scheduler._release(self._started)


class Scheduler:
    """Bounded concurrency with a bounded FIFO waiting queue."""

    def __init__(
        self,
        max_concurrency: int,
        max_queue: int,
        observe: Callable[[int, int], None] | None = None,
    ) -> None:
        """`observe(running, waiting)` is called after every change (the metrics gauges use it)."""
        if max_concurrency < 1 or max_queue < 0:
            raise ValueError(f"max_concurrency {max_concurrency} must be ≥ 1 and max_queue {max_queue} ≥ 0")
        self.max_concurrency = max_concurrency
        self.max_queue = max_queue
        self._observe = observe or (lambda running, waiting: None)
        self._running = 0
        self._waiters: deque[asyncio.Future[None]] = deque()
        self._mean_hold_s = 1.0

    @property
    def running(self) -> int:
        """Requests holding a slot."""
        return self._running

    @property
    def waiting(self) -> int:
        """Requests queued for a slot."""
        return len(self._waiters)

    async def acquire(self) -> Slot:
        """A slot, at once when one is free, else after waiting in line; raises QueueFull when full."""
        loop = asyncio.get_running_loop()
        if self._running < self.max_concurrency and not self._waiters:
            self._running += 1
            self._notify()
            return Slot(self, loop)
        if len(self._waiters) >= self.max_queue:
            raise QueueFull(len(self._waiters), self._retry_after_s())
        waiter: asyncio.Future[None] = loop.create_future()
        self._waiters.append(waiter)
        self._notify()
        try:
            await waiter  # _release hands its slot over: _running already counts this request
        except asyncio.CancelledError:
            self._abandon(waiter)
            raise
        return Slot(self, loop)

    def _abandon(self, waiter: asyncio.Future[None]) -> None:
        """A cancelled waiter leaves; if it had just been handed a slot, pass that slot on."""
        if waiter in self._waiters:
            self._waiters.remove(waiter)
            self._notify()
        elif waiter.done() and not waiter.cancelled():
            self._release(None)

    def _release(self, started: float | None) -> None:
        if started is not None:
            held = asyncio.get_running_loop().time() - started
            self._mean_hold_s += _EMA_WEIGHT * (held - self._mean_hold_s)
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)  # the slot moves to the waiter; _running is unchanged
                self._notify()
                return
        self._running -= 1
        self._notify()

    def _retry_after_s(self) -> int:
        """Seconds until a queue place is likely free: the queue drains at max_concurrency per hold."""
        turns = (len(self._waiters) + 1) / self.max_concurrency
        return min(_MAX_RETRY_AFTER_S, max(1, math.ceil(turns * self._mean_hold_s)))

    def _notify(self) -> None:
        self._observe(self._running, len(self._waiters))
