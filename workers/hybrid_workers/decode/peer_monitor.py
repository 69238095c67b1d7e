"""PeerMonitor: the circuit breaker of one prefill worker and the probe that closes it again.

The state says whether requests may try remote prefill at all. Only `ready` lets them; in any other
state they go straight to the fallback without a remote attempt (the breaker is open). A background
thread probes the worker - grpc.health.v1, then the compatibility Handshake - at start, every
`interval_s` while ready (a restart behind our back shows as a new instance id and is handshaken
again), and with a bounded backoff (`backoff_s`, doubling to `max_backoff_s`) while not ready, so a
returning worker takes remote prefills again within about a second.

Which request failures open the breaker: transport failures (connection refused, reset, lost) and
stalls (no frame for the stall limit). A refusal of one request (the worker's error on it, a full
queue, a total timeout) does not. A model mismatch seen on a request makes the probe run at once.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import Protocol

from hybrid_workers import metrics
from hybrid_workers.kv.errors import KVProtocolError, Reason
from hybrid_workers.kv.handshake import Verdict

log = logging.getLogger("hybrid_inference.decode")

OPENS_BREAKER = frozenset({Reason.TRANSPORT, Reason.STALLED})
RECHECK = frozenset({Reason.FINGERPRINT, Reason.VERSION, Reason.DTYPE})


class PeerState(StrEnum):
    """The prefill worker as the decode worker sees it (the `prefill` field of GET /ready)."""

    CONNECTING = "connecting"  # not handshaken yet
    READY = "ready"  # reachable and compatible: remote prefill on
    UNREACHABLE = "unreachable"  # down, not serving, or a transfer failed in transport
    STALLED = "stalled"  # a transfer stopped making progress: it hangs
    INCOMPATIBLE = "incompatible"  # another wire version, model identity or dtype


class Prober(Protocol):
    """What the monitor needs of decode.prefill_client.PrefillClient."""

    def probe(self, timeout_s: float = 2.0) -> Verdict:
        """Health and handshake; raises KVProtocolError when down."""


@dataclass(frozen=True)
class PeerStatus:
    """A snapshot: the state, why (one line), and the worker's instance id once handshaken."""

    state: PeerState
    detail: str
    instance_id: str = ""


class PeerMonitor:
    """Thread-safe; `start()` runs the first probe before returning, `close()` stops the thread."""

    def __init__(
        self,
        peer: Prober,
        target: str,
        model_label: str,
        *,
        interval_s: float = 2.0,
        backoff_s: float = 0.1,
        max_backoff_s: float = 1.0,
        probe_timeout_s: float = 2.0,
        on_change: Callable[[PeerStatus], None] | None = None,
    ) -> None:
        self.peer, self.target, self.model_label = peer, target, model_label
        self.interval_s, self.backoff_s, self.max_backoff_s = interval_s, backoff_s, max_backoff_s
        self.probe_timeout_s = probe_timeout_s
        self._on_change = on_change
        self._lock = threading.Lock()
        self._status = PeerStatus(PeerState.CONNECTING, f"prefill worker {target}: not handshaken yet")
        self._wake = threading.Event()
        self._closed = threading.Event()
        self._thread: threading.Thread | None = None
        self._export()

    @property
    def status(self) -> PeerStatus:
        """The current state and why."""
        with self._lock:
            return self._status

    def allows_remote(self) -> bool:
        """True when a request may try remote prefill (the breaker is closed)."""
        return self.status.state is PeerState.READY

    def start(self) -> None:
        """Probe once now, then keep probing in the background."""
        self.probe_now()
        self._thread = threading.Thread(target=self._loop, name="prefill-probe", daemon=True)
        self._thread.start()

    def close(self) -> None:
        """Stop probing."""
        self._closed.set()
        self._wake.set()

    def report(self, error: KVProtocolError) -> None:
        """A remote prefill failed with `error`: open the breaker on transport failures and stalls."""
        if error.reason in OPENS_BREAKER:
            state = PeerState.STALLED if error.reason is Reason.STALLED else PeerState.UNREACHABLE
            self._set(PeerStatus(state, error.detail, self.status.instance_id))
            self._wake.set()
        elif error.reason in RECHECK:
            self._wake.set()

    def probe_now(self) -> PeerStatus:
        """One probe (health + handshake); updates and returns the status."""
        try:
            verdict = self.peer.probe(self.probe_timeout_s)
        except KVProtocolError as exc:
            if exc.reason in (Reason.VERSION,):  # an older worker without Handshake
                return self._set(PeerStatus(PeerState.INCOMPATIBLE, exc.detail))
            current = self.status
            if current.state is PeerState.STALLED and exc.reason is Reason.TIMEOUT:
                return current  # still hanging: keep saying so
            return self._set(PeerStatus(PeerState.UNREACHABLE, exc.detail, current.instance_id))
        if verdict.problem is not None:
            return self._set(PeerStatus(PeerState.INCOMPATIBLE, verdict.problem.detail, verdict.instance_id))
        detail = f"prefill worker {self.target} ready: {verdict.peer.describe()}"
        return self._set(PeerStatus(PeerState.READY, detail, verdict.instance_id))

    def _loop(self) -> None:
        backoff = self.backoff_s
        while not self._closed.is_set():
            ready = self.status.state is PeerState.READY
            self._wake.wait(self.interval_s if ready else backoff)
            self._wake.clear()
            if self._closed.is_set():
                return
            status = self.probe_now()
            ready = status.state is PeerState.READY
            backoff = self.backoff_s if ready else min(backoff * 2, self.max_backoff_s)

    def _set(self, status: PeerStatus) -> PeerStatus:
        with self._lock:
            old, self._status = self._status, status
        if (old.state, old.instance_id) != (status.state, status.instance_id):
            restarted = old.instance_id and status.instance_id and old.instance_id != status.instance_id
            log.warning(
                "prefill peer %s: %s -> %s%s: %s",
                self.target,
                old.state.value,
                status.state.value,
                " (restarted)" if restarted else "",
                status.detail,
            )
            self._export()
            if self._on_change is not None:
                self._on_change(status)
        return status

    def _export(self) -> None:
        current = self.status.state
        for state in PeerState:
            metrics.prefill_peer_state.labels(self.model_label, state.value).set(int(state is current))
