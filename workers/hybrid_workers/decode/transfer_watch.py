"""TransferWatch: ends a remote prefill's gRPC call when its client leaves or the transfer stops moving.

The prefill worker sends a heartbeat whenever it has sent nothing for a quarter of the stall limit,
so a live transfer always makes progress; a call with no frame for `stall_s` is hung (the process is
stopped, the link is dead) and is cancelled as STALLED, long before its total deadline. A set
`cancel` event (the request's client went away) cancels the call within one poll.
"""

from __future__ import annotations

import threading
import time

import grpc

from hybrid_workers.kv.errors import KVProtocolError, PrefillCancelled, Reason

# How often the watch checks for cancellation and lack of progress.
_WATCH_POLL_S = 0.02


class TransferWatch:
    """Cancels a running call when its request is cancelled or no frame arrived for `stall_s`."""

    def __init__(self, call: grpc.Future, stall_s: float, cancel: threading.Event | None) -> None:
        self._call = call
        self._stall_s = stall_s
        self._cancel = cancel
        self._last = time.monotonic()
        self._done = threading.Event()
        self.stalled = self.cancelled = False
        threading.Thread(target=self._run, name="prefill-watch", daemon=True).start()

    def progress(self) -> None:
        """A frame arrived."""
        self._last = time.monotonic()

    def stop(self) -> None:
        """The call is over."""
        self._done.set()

    def failure(self, error: KVProtocolError, target: str) -> Exception:
        """What the caller raises for a failed call: cancelled, stalled, or `error` itself."""
        if self.cancelled:
            return PrefillCancelled("the request was cancelled during its remote prefill")
        if self.stalled:
            return KVProtocolError(
                Reason.STALLED,
                f"prefill worker {target} sent nothing (not even a heartbeat) for {self._stall_s:g} s "
                "(--prefill-stall-timeout); it hangs or the link is down",
            )
        return error

    def _run(self) -> None:
        while not self._done.wait(_WATCH_POLL_S):
            if self._cancel is not None and self._cancel.is_set():
                self.cancelled = True
            elif time.monotonic() - self._last > self._stall_s:
                self.stalled = True
            else:
                continue
            self._call.cancel()
            return
