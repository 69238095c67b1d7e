"""Where a prompt is prefilled: remote (the prefill worker streams its KV) or local, with the fallback policy.

Prompts of at least `remote_prefill_min_tokens` tokens go to the prefill worker when one is
configured and its breaker (decode.peer_monitor) is closed; shorter ones prefill on the decode worker.
When the breaker is open (the worker is down, hangs or is incompatible) no remote attempt is made;
when a remote prefill fails, the failure is reported to the breaker. Either way `--fallback local`
prefills locally (counted in `prefill_fallback_total{reason}`, logged with the reason) and
`--fallback fail` raises `RemotePrefillFailed`, which the API answers with 503. A request cancelled
during its remote prefill (its client left) raises PrefillCancelled: not a fallback, not a failure.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from hybrid_workers import metrics
from hybrid_workers.decode.config import DecodeConfig
from hybrid_workers.decode.engine_api import KVSlot
from hybrid_workers.decode.peer_monitor import PeerMonitor, PeerState
from hybrid_workers.engine.sampling import SamplingParams
from hybrid_workers.enums import Fallback
from hybrid_workers.kv.errors import KVProtocolError, PrefillCancelled, Reason
from hybrid_workers.metrics import FallbackReason, PrefillSite, RemoteOutcome

if TYPE_CHECKING:
    from hybrid_workers.decode.prefill_client import RemotePrefill

log = logging.getLogger("hybrid_inference.decode")

_REASONS = {
    Reason.TRANSPORT: FallbackReason.UNREACHABLE,
    Reason.TIMEOUT: FallbackReason.TIMEOUT,
    Reason.STALLED: FallbackReason.STALLED,
    Reason.REJECTED: FallbackReason.ERROR,
}


class PrefillPeer(Protocol):
    """What routing needs of `decode.prefill_client.PrefillClient`."""

    def prefill(
        self,
        token_ids: Sequence[int],
        params: SamplingParams,
        slot: KVSlot | None = None,
        cancel: threading.Event | None = None,
    ) -> RemotePrefill:
        """First token of the prompt, computed remotely, its KV landed in `slot` (or in a new cache
        when `slot` is None); raises KVProtocolError, or PrefillCancelled once `cancel` is set."""

    def probe(self, timeout_s: float = 2.0) -> Any:
        """Health + handshake verdict; raises KVProtocolError when the worker is down."""


class RemotePrefillFailed(Exception):
    """Remote prefill failed and the policy is `fail` (answered as 503)."""

    def __init__(self, reason: FallbackReason, cause: Exception) -> None:
        super().__init__(f"prefill worker failed ({reason.value}): {cause}; the policy is --fallback fail")
        self.reason = reason


@dataclass(frozen=True)
class PrefillPlan:
    """The outcome of routing one prompt."""

    site: PrefillSite
    remote: RemotePrefill | None  # the remote prefill's KV, first token and costs; None: prefill locally
    fallback: FallbackReason | None = None  # set when a remote attempt failed and we went local


@dataclass(frozen=True)
class Readiness:
    """The body of GET /ready."""

    ready: bool  # take traffic?
    prefill: str  # none | connecting | ready | unreachable | stalled | incompatible (PeerState)
    detail: str  # why, in words
    fallback: str  # local | fail: what long prompts do while the prefill worker is not ready
    remote: bool  # long prompts go to the prefill worker now (the breaker is closed)
    instance: str = ""  # the prefill worker process last handshaken (new at each of its starts)


class PrefillRouter:
    """Decides local vs remote per prompt and applies the fallback policy; thread-safe."""

    def __init__(
        self,
        config: DecodeConfig,
        model_label: str,
        peer: PrefillPeer | None,
        monitor: PeerMonitor | None = None,
    ) -> None:
        """`monitor`: the peer's breaker; by default one probing `peer` (started by `start()`)."""
        self.config = config
        self.model_label = model_label
        self.peer = peer
        if monitor is None and peer is not None:
            monitor = PeerMonitor(
                peer, config.prefill or "prefill worker", model_label, interval_s=config.probe_interval_s
            )
        self.monitor = monitor

    def start(self) -> None:
        """Handshake with the prefill worker now and keep probing it (no-op without one)."""
        if self.monitor is not None:
            self.monitor.start()

    def close(self) -> None:
        """Stop probing."""
        if self.monitor is not None:
            self.monitor.close()

    def wants_remote(self, prompt_len: int) -> bool:
        """True when a prompt of this length should prefill on the prefill worker."""
        return self.peer is not None and prompt_len >= self.config.remote_prefill_min_tokens

    def plan(
        self,
        prompt_ids: Sequence[int],
        params: SamplingParams,
        slot: KVSlot | None = None,
        cancel: threading.Event | None = None,
    ) -> PrefillPlan:
        """Run the remote prefill when wanted and allowed (blocking; call from a worker thread).

        With a `slot`, the remote KV lands in it layer by layer; after a fallback to local the slot
        may hold some layers already, which the local prefill overwrites. Raises RemotePrefillFailed
        (policy `fail`) or PrefillCancelled (`cancel` was set meanwhile).
        """
        if self.peer is None or not self.wants_remote(len(prompt_ids)) or params.min_tokens > 0:
            # min_tokens holds EOS back from the first token too, which the wire cannot ask for yet
            return PrefillPlan(PrefillSite.LOCAL, None)
        if self.monitor is not None and not self.monitor.allows_remote():
            status = self.monitor.status
            reason = (
                FallbackReason.INCOMPATIBLE
                if status.state is PeerState.INCOMPATIBLE
                else FallbackReason.PEER_DOWN
            )
            return self._failed(reason, Exception(f"remote prefill skipped: {status.detail}"))
        try:
            remote = self.peer.prefill(list(prompt_ids), params, slot=slot, cancel=cancel)
        except KVProtocolError as exc:
            self._count(RemoteOutcome.FAILED)
            if self.monitor is not None:
                self.monitor.report(exc)
            return self._failed(_REASONS.get(exc.reason, FallbackReason.PROTOCOL), exc)
        except PrefillCancelled:
            self._count(RemoteOutcome.CANCELLED)
            raise
        except Exception as exc:  # the client promises KVProtocolError; anything else is a peer error too
            self._count(RemoteOutcome.FAILED)
            return self._failed(FallbackReason.ERROR, exc)
        self._count(RemoteOutcome.SUCCESS)
        return PrefillPlan(PrefillSite.REMOTE, remote)

    def _count(self, outcome: RemoteOutcome) -> None:
        metrics.remote_prefill_total.labels(self.model_label, outcome.value).inc()

    def _failed(self, reason: FallbackReason, exc: Exception) -> PrefillPlan:
        policy = self.config.fallback
        log.warning(
            "remote prefill fallback: reason=%s policy=%s peer=%s detail=%s",
            reason.value,
            policy.value,
            self.config.prefill,
            exc,
        )
        if policy is Fallback.FAIL:
            raise RemotePrefillFailed(reason, exc) from exc
        metrics.prefill_fallback_total.labels(self.model_label, reason.value).inc()
        return PrefillPlan(PrefillSite.LOCAL, None, fallback=reason)

    def readiness(self) -> Readiness:
        """Whether to take traffic, as far as prefill is concerned (the breaker's state; no I/O)."""
        policy = self.config.fallback.value
        if self.monitor is None:
            return Readiness(
                True, "none", "no prefill worker configured: all prompts prefill locally", policy, False
            )
        status = self.monitor.status
        state, instance = status.state.value, status.instance_id
        if status.state is PeerState.READY:
            return Readiness(True, state, status.detail, policy, True, instance)
        if self.config.fallback is Fallback.LOCAL:
            why = f"{status.detail}; long prompts prefill locally (--fallback local)"
            return Readiness(True, state, why, policy, False, instance)
        why = f"{status.detail}; long prompts are refused (--fallback fail)"
        return Readiness(False, state, why, policy, False, instance)
