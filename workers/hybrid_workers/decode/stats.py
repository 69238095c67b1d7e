"""One request's timings: fed as tokens leave the server, turned into metrics and one log line at the end.

TTFT runs from the request's arrival to the moment its first token is handed to the server for
sending (streaming) or produced (non-streaming, where the whole body leaves at the end); decode
tokens per second counts the tokens after the first over the time from first to last token.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

from hybrid_workers import metrics
from hybrid_workers.decode.routing import KvTransfer
from hybrid_workers.metrics import Outcome, PrefillSite

log = logging.getLogger("hybrid_inference.decode")


@dataclass
class RequestStats:
    """Mutable per-request record; every method is called from the event loop."""

    model: str  # the `model` label
    request_id: str
    arrival: float = field(default_factory=time.perf_counter)
    prompt_tokens: int = 0
    site: PrefillSite = PrefillSite.LOCAL
    kv: KvTransfer | None = None
    fallback: str | None = None
    tokens: int = 0  # generated tokens sent so far
    first_at: float | None = None
    last_at: float | None = None
    finished: bool = False

    def admitted(self, prompt_tokens: int) -> None:
        """The request has a slot and will run."""
        self.prompt_tokens = prompt_tokens

    def prefilled(self, site: PrefillSite, kv: KvTransfer | None, fallback: str | None) -> None:
        """Where the prompt was prefilled, and what a remote prefill cost on the wire."""
        self.site, self.kv, self.fallback = site, kv, fallback
        metrics.prompt_tokens_total.labels(self.model, site.value).inc(self.prompt_tokens)
        if kv is not None:
            metrics.kv_transfer_seconds.labels(self.model).observe(kv.transfer_s)
            metrics.kv_exposed_transfer_seconds.labels(self.model).observe(kv.exposed_s)
            metrics.kv_transfer_bytes_total.labels(self.model).inc(kv.bytes)

    def token_sent(self, count: int = 1) -> None:
        """`count` generated tokens are leaving the server now."""
        now = time.perf_counter()
        labels = (self.model, self.site.value)
        if self.first_at is None:
            self.first_at = now
            metrics.time_to_first_token_seconds.labels(*labels).observe(now - self.arrival)
        elif self.last_at is not None and count > 0:
            metrics.inter_token_latency_seconds.labels(*labels).observe((now - self.last_at) / count)
        self.last_at = now
        self.tokens += count
        metrics.generation_tokens_total.labels(*labels).inc(count)

    @property
    def ttft_s(self) -> float | None:
        """Arrival to first token, once there is one."""
        return None if self.first_at is None else self.first_at - self.arrival

    @property
    def decode_tps(self) -> float | None:
        """Tokens after the first per second of decode, once there are at least two."""
        if self.first_at is None or self.last_at is None or self.tokens < 2 or self.last_at <= self.first_at:
            return None
        return (self.tokens - 1) / (self.last_at - self.first_at)

    def finish(self, outcome: Outcome, finish_reason: str | None = None) -> None:
        """Count the request once, with its outcome, and log its line (idempotent)."""
        if self.finished:
            return
        self.finished = True
        metrics.requests_total.labels(self.model, outcome.value).inc()
        if outcome is Outcome.SUCCESS:
            self._observe_success()
        if self.prompt_tokens:
            log.info(self.line(outcome, finish_reason))

    def _observe_success(self) -> None:
        labels = (self.model, self.site.value)
        metrics.e2e_request_latency_seconds.labels(*labels).observe(time.perf_counter() - self.arrival)
        tps = self.decode_tps
        if tps is not None:
            metrics.decode_tokens_per_second.labels(*labels).observe(tps)

    def line(self, outcome: Outcome, finish_reason: str | None) -> str:
        """The one-line summary `serve` shows per request."""
        ttft = "-" if self.ttft_s is None else f"{self.ttft_s:.3f}s"
        tps = "-" if self.decode_tps is None else f"{self.decode_tps:.1f}"
        exposed = "-" if self.kv is None else f"{self.kv.exposed_s * 1000:.1f}ms"
        site = self.site.value + (f" (fallback: {self.fallback})" if self.fallback else "")
        return (
            f"request {self.request_id}: {outcome.value}"
            + (f"/{finish_reason}" if finish_reason else "")
            + f" prompt={self.prompt_tokens} tokens prefill={site} ttft={ttft}"
            + f" output={self.tokens} tokens tps={tps} kv_exposed={exposed}"
        )
