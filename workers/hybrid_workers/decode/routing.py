"""Where a prompt is prefilled: remote (the prefill worker streams its KV) or local, with the fallback policy.

Prompts of at least `remote_prefill_min_tokens` tokens go to the prefill worker when one is
configured; shorter ones prefill on the decode worker. When the remote prefill fails, `--fallback
local` prefills locally (counted in `prefill_fallback_total{reason}`) and `--fallback fail` raises
`RemotePrefillFailed`, which the API answers with 503.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

from hybrid_workers import metrics
from hybrid_workers.decode.config import DecodeConfig
from hybrid_workers.decode.engine_api import KVSlot
from hybrid_workers.engine.sampling import SamplingParams
from hybrid_workers.enums import Fallback
from hybrid_workers.kv.errors import KVProtocolError, Reason
from hybrid_workers.metrics import FallbackReason, PrefillSite

if TYPE_CHECKING:
    from hybrid_workers.decode.prefill_client import RemotePrefill

log = logging.getLogger("hybrid_inference.decode")

# How long a /ready probe of the prefill worker is trusted.
_HEALTH_TTL_S = 2.0

_REASONS = {
    Reason.TRANSPORT: FallbackReason.UNREACHABLE,
    Reason.TIMEOUT: FallbackReason.TIMEOUT,
    Reason.REJECTED: FallbackReason.ERROR,
}


class PrefillPeer(Protocol):
    """What routing needs of `decode.prefill_client.PrefillClient`."""

    def prefill(
        self, token_ids: Sequence[int], params: SamplingParams, slot: KVSlot | None = None
    ) -> RemotePrefill:
        """First token of the prompt, computed remotely, its KV landed in `slot` (or in a new cache
        when `slot` is None); raises KVProtocolError."""

    def health(self) -> Any:
        """Raises when the prefill worker is unreachable or not serving."""


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
    prefill: str  # none | reachable | unreachable
    detail: str  # why, in words


class PrefillRouter:
    """Decides local vs remote per prompt and applies the fallback policy; thread-safe."""

    def __init__(self, config: DecodeConfig, model_label: str, peer: PrefillPeer | None) -> None:
        self.config = config
        self.model_label = model_label
        self.peer = peer
        self._health_lock = threading.Lock()
        self._health: tuple[float, bool, str] = (-_HEALTH_TTL_S, False, "not checked yet")

    def wants_remote(self, prompt_len: int) -> bool:
        """True when a prompt of this length should prefill on the prefill worker."""
        return self.peer is not None and prompt_len >= self.config.remote_prefill_min_tokens

    def plan(
        self, prompt_ids: Sequence[int], params: SamplingParams, slot: KVSlot | None = None
    ) -> PrefillPlan:
        """Run the remote prefill when wanted (blocking; call from a worker thread).

        With a `slot`, the remote KV lands in it layer by layer; after a fallback to local the slot
        may hold some layers already, which the local prefill overwrites.
        """
        if self.peer is None or not self.wants_remote(len(prompt_ids)):
            return PrefillPlan(PrefillSite.LOCAL, None)
        try:
            if slot is None:
                remote = self.peer.prefill(list(prompt_ids), params)
            else:
                remote = self.peer.prefill(list(prompt_ids), params, slot=slot)
        except KVProtocolError as exc:
            return self._failed(_REASONS.get(exc.reason, FallbackReason.PROTOCOL), exc)
        except Exception as exc:  # the client promises KVProtocolError; anything else is a peer error too
            return self._failed(FallbackReason.ERROR, exc)
        return PrefillPlan(PrefillSite.REMOTE, remote)

    def _failed(self, reason: FallbackReason, exc: Exception) -> PrefillPlan:
        with self._health_lock:  # /ready learns it at once
            self._health = (time.monotonic(), False, str(exc))
        if self.config.fallback is Fallback.FAIL:
            raise RemotePrefillFailed(reason, exc) from exc
        metrics.prefill_fallback_total.labels(self.model_label, reason.value).inc()
        log.warning("remote prefill failed (%s): %s; prefilling locally", reason.value, exc)
        return PrefillPlan(PrefillSite.LOCAL, None, fallback=reason)

    def readiness(self) -> Readiness:
        """Whether to take traffic, as far as prefill is concerned; probes the peer at most every couple
        of seconds. Blocking (a gRPC call): call from a worker thread.
        """
        if self.peer is None:
            return Readiness(True, "none", "no prefill worker configured: all prompts prefill locally")
        ok, detail = self._peer_health()
        if ok:
            return Readiness(True, "reachable", f"prefill worker {self.config.prefill} reachable")
        why = f"prefill worker {self.config.prefill} unreachable ({detail})"
        if self.config.fallback is Fallback.LOCAL:
            return Readiness(True, "unreachable", f"{why}; prefilling locally (--fallback local)")
        return Readiness(False, "unreachable", f"{why} and --fallback fail")

    def _peer_health(self) -> tuple[bool, str]:
        assert self.peer is not None
        with self._health_lock:
            checked, ok, detail = self._health
            if time.monotonic() - checked < _HEALTH_TTL_S:
                return ok, detail
            try:
                self.peer.health()
                ok, detail = True, "ok"
            except Exception as exc:  # any failure of the probe means "not reachable now"
                ok, detail = False, str(exc) or type(exc).__name__
            self._health = (time.monotonic(), ok, detail)
            return ok, detail
