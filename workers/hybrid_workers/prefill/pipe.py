"""LayerPipe: the compute thread puts finished layers in, the gRPC response generator takes them out.

Bounded (layerwise mode): when the network is slower than compute, the compute thread waits instead
of buffering the whole cache. Either side stops promptly once the pipe is cancelled (client gone).
"""

from __future__ import annotations

import queue
import threading
import time
from dataclasses import dataclass

import torch

from hybrid_workers.kv.frames import Trailer

_POLL_S = 0.05  # how often a blocked side re-checks for cancellation


class Cancelled(Exception):
    """The request was cancelled (the client went away); raised to abort the prefill's forward pass."""


@dataclass(frozen=True)
class LayerReady:
    """Layer `index` is final: keys/values [1, kv_heads, seq, head_dim] as stored in the cache."""

    index: int
    keys: torch.Tensor
    values: torch.Tensor


@dataclass(frozen=True)
class PrefillDone:
    """All layers were put; the trailer lacks only send_tail_seconds (filled in by the sender)."""

    trailer: Trailer
    last_layer_done: float  # perf_counter() when the last layer was final


@dataclass(frozen=True)
class PrefillFailed:
    """The prefill raised; the sender ends the stream with an error status."""

    error: BaseException


Item = LayerReady | PrefillDone | PrefillFailed


class LayerPipe:
    """A cancellable queue of Items; maxsize 0 means unbounded (bulk mode holds the cache anyway)."""

    def __init__(self, maxsize: int) -> None:
        self._queue: queue.Queue[Item] = queue.Queue(maxsize)
        self._cancelled = threading.Event()

    @property
    def cancelled(self) -> bool:
        """True once cancel() was called."""
        return self._cancelled.is_set()

    def cancel(self) -> None:
        """Stop both sides: put() and get() raise Cancelled from now on (idempotent, any thread)."""
        self._cancelled.set()

    def put(self, item: Item) -> None:
        """Hand over `item`, waiting while the pipe is full; Cancelled when the request went away."""
        while not self._cancelled.is_set():
            try:
                self._queue.put(item, timeout=_POLL_S)
                return
            except queue.Full:
                continue
        raise Cancelled()

    def ready(self) -> list[Item]:
        """Every item already in the pipe, in order, without waiting (none once cancelled)."""
        items: list[Item] = []
        while not self._cancelled.is_set():
            try:
                items.append(self._queue.get_nowait())
            except queue.Empty:
                break
        return items

    def get(self, wait_s: float | None = None) -> Item | None:
        """The next item, waiting for it (at most `wait_s`, then None); Cancelled once the request left."""
        deadline = None if wait_s is None else time.monotonic() + wait_s
        while not self._cancelled.is_set():
            try:
                return self._queue.get(timeout=_POLL_S)
            except queue.Empty:
                if deadline is not None and time.monotonic() >= deadline:
                    return None
        raise Cancelled()
