"""One request's timings: fed as tokens leave the server, turned into metrics and one log line at the end.

TTFT runs from the request's arrival to the moment its first token reaches the HTTP layer (handed
to the server for sending when streaming; a non-streaming body leaves only at the end). Decode
tokens per second counts the tokens after the first over the time the model took from first to last
token; inter-token latency is the gap between production times as well.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from hybrid_workers import metrics
from hybrid_workers.metrics import PrefillSite, RequestOutcome

if TYPE_CHECKING:
    from hybrid_workers.decode.transfer_clock import TransferTimings

log = logging.getLogger("hybrid_inference.decode")


@dataclass
class RequestStats:
    """Mutable per-request record; every method is called from the event loop."""

    model: str  # the `model` label
    request_id: str
    arrival: float = field(default_factory=time.perf_counter)
    prompt_tokens: int = 0
    site: PrefillSite = PrefillSite.LOCAL
    kv: TransferTimings | None = None  # remote prefill only
    fallback: str | None = None
    tokens: int = 0  # generated tokens sent so far
    first_sent: float | None = None  # when the first token left the server
    first_at: float | None = None  # when the first token was produced
    last_at: float | None = None  # when the latest token was produced
    finished: bool = False
    queued_at: float | None = None  # when it asked the scheduler for a slot

    def queued(self) -> None:
        """The request asks the scheduler for a slot now."""
        self.queued_at = time.perf_counter()

    def admitted(self, prompt_tokens: int) -> None:
        """The request has a slot and will run."""
        self.prompt_tokens = prompt_tokens
        if self.queued_at is not None:
            metrics.request_queue_time_seconds.labels(self.model).observe(
                time.perf_counter() - self.queued_at
            )
        metrics.request_prompt_tokens.labels(self.model).observe(prompt_tokens)

    def upload_aborted(self, error: Exception) -> None:
        """The client went away while sending its body: counted as cancelled, one log line."""
        if not self.finished:
            self.finished = True
            metrics.requests_total.labels(self.model, RequestOutcome.CANCELLED.value).inc()
            log.info("request %s: cancelled: %s", self.request_id, error)

    def prefilled(self, site: PrefillSite, kv: TransferTimings | None, fallback: str | None) -> None:
        """Where the prompt was prefilled, and what a remote prefill cost on the wire."""
        self.site, self.kv, self.fallback = site, kv, fallback
        metrics.prompt_tokens_total.labels(self.model, site.value).inc(self.prompt_tokens)
        if kv is not None:
            metrics.kv_transfer_seconds.labels(self.model).observe(kv.transfer_s)
            metrics.kv_exposed_transfer_seconds.labels(self.model).observe(kv.exposed_transfer_s)
            metrics.kv_transfer_bytes_total.labels(self.model).inc(kv.bytes)
            if kv.wire_s > 0:
                metrics.kv_wire_seconds.labels(self.model, kv.transport).observe(kv.wire_s)
                metrics.kv_goodput_bytes_per_second.labels(self.model, kv.transport).observe(
                    kv.goodput_bytes_per_s
                )

    def token_sent(self, produced_at: float) -> None:
        """A generated token, produced by the model at `produced_at`, is leaving the server now.

        TTFT uses the sending time (what the client sees); inter-token latency and decode TPS use the
        production times, so tokens that queued up while the response was starting (and then leave
        in a burst) do not inflate the decode speed.
        """
        labels = (self.model, self.site.value)
        if self.first_at is None:
            self.first_at, self.first_sent = produced_at, time.perf_counter()
            metrics.time_to_first_token_seconds.labels(*labels).observe(self.first_sent - self.arrival)
        elif self.last_at is not None:
            metrics.inter_token_latency_seconds.labels(*labels).observe(produced_at - self.last_at)
        self.last_at = produced_at
        self.tokens += 1
        metrics.generation_tokens_total.labels(*labels).inc()

    @property
    def ttft_s(self) -> float | None:
        """Arrival to first token, once there is one."""
        return None if self.first_sent is None else self.first_sent - self.arrival

    @property
    def decode_tps(self) -> float | None:
        """Tokens after the first per second of decode, once there are at least two."""
        if self.first_at is None or self.last_at is None or self.tokens < 2 or self.last_at <= self.first_at:
            return None
        return (self.tokens - 1) / (self.last_at - self.first_at)

    def finish(self, outcome: RequestOutcome, finish_reason: str | None = None) -> None:
        """Count the request once, with its outcome, and log its line (idempotent)."""
        if self.finished:
            return
        self.finished = True
        metrics.requests_total.labels(self.model, outcome.value).inc()
        if outcome is RequestOutcome.SUCCESS:
            self._observe_success(finish_reason or "length")
        if self.prompt_tokens:
            log.info(self.line(outcome, finish_reason))

    def _observe_success(self, finish_reason: str) -> None:
        metrics.request_success_total.labels(self.model, finish_reason).inc()
        metrics.request_generation_tokens.labels(self.model).observe(self.tokens)
        labels = (self.model, self.site.value)
        metrics.e2e_request_latency_seconds.labels(*labels).observe(time.perf_counter() - self.arrival)
        tps = self.decode_tps
        if tps is not None:
            metrics.decode_tokens_per_second.labels(*labels).observe(tps)

    def line(self, outcome: RequestOutcome, finish_reason: str | None) -> str:
        """The one-line summary `serve` shows per request."""
        ttft = "-" if self.ttft_s is None else f"{self.ttft_s:.3f}s"
        tps = "-" if self.decode_tps is None else f"{self.decode_tps:.1f}"
        exposed = "-" if self.kv is None else f"{self.kv.exposed_transfer_s * 1000:.1f}ms"
        site = self.site.value + (f" (fallback: {self.fallback})" if self.fallback else "")
        return (
            f"request {self.request_id}: {outcome.value}"
            + (f"/{finish_reason}" if finish_reason else "")
            + f" prompt={self.prompt_tokens} tokens prefill={site} ttft={ttft}"
            + f" output={self.tokens} tokens tps={tps} kv_exposed={exposed}"
        )
