"""Admission by KV memory: sequences reserve their slot's bytes from one budget, first come first served.

A sequence reserves prompt + max_tokens positions (never the model's whole context) before its
prompt's KV exists anywhere on this worker: a remote prefill's KV lands in the reserved slot. When
the budget is full the reservation waits in FIFO order (no overtaking: a large request at the head
is not starved by small ones behind it); a reservation larger than the whole budget is refused at
once, with the sizes, because it could never be served. Thread-safe (reservations come from the
request threads, releases from the engine loop).
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Callable

from hybrid_workers.errors import UserError


class ReservationCancelled(Exception):
    """The request was cancelled while waiting for KV memory."""


class KVBudget:
    """A byte budget with a FIFO line of waiting reservations."""

    def __init__(self, budget_bytes: int, observe: Callable[[int, int], None] | None = None) -> None:
        """`observe(used_bytes, budget_bytes)` is called after every change (the KV usage gauge)."""
        if budget_bytes < 1:
            raise ValueError(f"KV budget {budget_bytes} bytes: must be positive")
        self.budget_bytes = budget_bytes
        self._used = 0
        self._line: deque[object] = deque()
        self._changed = threading.Condition()
        self._observe = observe or (lambda used, budget: None)
        self._observe(0, budget_bytes)

    @property
    def used_bytes(self) -> int:
        """Bytes reserved now."""
        return self._used

    @property
    def waiting(self) -> int:
        """Reservations waiting in line now."""
        return len(self._line)

    def reserve(self, nbytes: int, cancelled: threading.Event, poll_s: float = 0.1) -> None:
        """Block until `nbytes` fit and every earlier reservation got its bytes; then take them.

        Raises UserError when `nbytes` exceed the whole budget, ReservationCancelled when `cancelled`
        is set while waiting (checked every `poll_s`).
        """
        if nbytes > self.budget_bytes:
            raise UserError(
                f"this request needs {nbytes} bytes of KV cache (prompt + max_tokens), more than the "
                f"worker's whole budget of {self.budget_bytes} bytes; lower max_tokens or shorten the "
                "prompt, or raise --kv-cache-bytes"
            )
        ticket = object()
        with self._changed:
            self._line.append(ticket)
            try:
                while self._line[0] is not ticket or self._used + nbytes > self.budget_bytes:
                    if cancelled.is_set():
                        raise ReservationCancelled()
                    self._changed.wait(poll_s)
                self._used += nbytes
                self._observe(self._used, self.budget_bytes)
            finally:
                self._line.remove(ticket)
                self._changed.notify_all()

    def release(self, nbytes: int) -> None:
        """Give `nbytes` back (the sequence left the batch); wakes the head of the line."""
        with self._changed:
            self._used -= nbytes
            self._observe(self._used, self.budget_bytes)
            self._changed.notify_all()
